"""Child processes that end with their parent, however the parent ends.

A process killed with SIGKILL, or crashed by a segfault, runs no cleanup: the servers
it started live on, reparented to init. So a long-lived child is started through a
tether, a small process that runs the command in a process group of its own, watches
its parent, and ends the whole group when the parent is gone or when it is told to
stop. Both are in a session of their own, so the Ctrl-C a terminal sends to the
parent's group does not reach them: the parent decides when they stop.

    python -m prompt_descent.runtime.tether PARENT_PID -- COMMAND [ARG ...]
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any

POLL_SECONDS = 0.2
GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def spawn(command: list[str], **popen: Any) -> subprocess.Popen:
    """Start `command` tied to this process; `popen` as for subprocess.Popen."""
    tether = [
        sys.executable,
        "-m",
        "prompt_descent.runtime.tether",
        str(os.getpid()),
        "--",
        *command,
    ]
    return subprocess.Popen(tether, start_new_session=True, **popen)


def stop(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """Ask a tethered command to end (SIGTERM to its group), and wait for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace + 2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """In the command, before exec: SIGTERM when the tether dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _end_group(child: subprocess.Popen, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _watch(parent: int, command: list[str]) -> int:
    told_to_stop = False

    def on_stop(_signum: int, _frame: object) -> None:
        nonlocal told_to_stop
        told_to_stop = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    child = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
    while child.poll() is None:
        if told_to_stop or os.getppid() != parent:
            _end_group(child, GRACE_SECONDS)
            break
        time.sleep(POLL_SECONDS)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    parent_pid, separator, *the_command = sys.argv[1:]
    if separator != "--" or not the_command:
        sys.exit("usage: python -m prompt_descent.runtime.tether PARENT_PID -- COMMAND [ARG ...]")
    sys.exit(_watch(int(parent_pid), the_command))
