"""Test setup: a throwaway Prefect home, and the scripted fake model as a litellm provider."""

from __future__ import annotations

import os
import tempfile

# Settings Prefect and litellm read at import: before any project import.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prompt-descent-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings  # noqa: E402

from prompt_descent.llm.gateway import register_provider  # noqa: E402
from prompt_descent.runtime.prefect_api import ensure_api  # noqa: E402
from prompt_descent.testing.fake import Script, ScriptedModel  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> None:
    """The suite's throwaway Prefect server, tied to the pytest process: it ends when the
    suite does, even when it is killed or crashes (see prompt_descent.runtime.prefect_api)."""
    ensure_api()


@pytest.fixture(autouse=True)
def fresh_prefect_results(tmp_path: Path) -> Iterator[Path]:
    """Each test gets its own Prefect result cache, so no test is served another's results."""
    results = tmp_path / "prefect-results"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results}):
        yield results


@pytest.fixture
def fake_model() -> Callable[[Script], ScriptedModel]:
    """Register a scripted model as the `fake/…` litellm provider; returns it for inspection."""

    def register(script: Script, latency_s: float = 0.0) -> ScriptedModel:
        model = ScriptedModel(script, latency_s)
        register_provider("fake", model)
        return model

    return register
