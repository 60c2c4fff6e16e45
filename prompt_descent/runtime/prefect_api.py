"""The Prefect API the flows report to: the user's, or a throwaway server of our own.

With no `PREFECT_API_URL`, Prefect starts a throwaway server itself, as a plain child
process: a SIGKILL or a crash of ours leaves it running forever, and a Ctrl-C in the
terminal kills it under a flow that still reports to it (which then never exits).
So this module starts that server instead, through a tether (it ends with this
process, however this process ends) in a session of its own (a Ctrl-C stops our run,
and our run stops the server), and points Prefect at it. One server per process.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from prompt_descent.errors import UserError
from prompt_descent.runtime import tether

_server: subprocess.Popen | None = None
_starting = threading.Lock()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_server() -> None:
    global _server
    if _server is not None:
        tether.stop(_server)
        _server = None


def ensure_api() -> None:
    """Make sure Prefect has an API to talk to; start the throwaway server if it has none.

    Registered to stop at exit before Prefect registers its own exit handlers, so that
    its event and log workers (which run first) still reach the server.
    """
    global _server
    from prefect.context import refresh_global_settings_context
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
    )

    with _starting:
        if PREFECT_API_URL.value():
            return
        port = _free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        environment = {
            **os.environ,
            **get_current_settings().to_environment_variables(exclude_unset=True),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        log = Path(get_current_settings().home) / "server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            _server = tether.spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        atexit.register(_stop_server)
        deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        while not _healthy(api_url):
            if _server.poll() is not None or time.monotonic() > deadline:
                _stop_server()
                raise UserError(
                    f"the throwaway Prefect server did not start (its log: {log}); or run "
                    "`prefect server start` and set PREFECT_API_URL"
                )
            time.sleep(0.1)
        os.environ["PREFECT_API_URL"] = api_url
        refresh_global_settings_context()
