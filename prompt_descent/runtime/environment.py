"""Settings Prefect and litellm read when first imported: project-local, offline, quiet."""

from __future__ import annotations

import os
from pathlib import Path


def apply_project_defaults() -> None:
    """Keep Prefect's home in the project and nothing on the network, unless the user set it.

    Call before anything imports Prefect or litellm.
    """
    home = Path(
        os.environ.setdefault("PREFECT_HOME", str(Path(".prompt_descent/prefect").resolve()))
    )
    home.mkdir(parents=True, exist_ok=True)  # Prefect does not create missing parents
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if "PREFECT_API_URL" not in os.environ:
        # The throwaway server is stopped mid-flush at exit and logs tracebacks about it;
        # `prefect server start` (see README) is the server to watch runs on.
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
