"""Ctrl-C: the first stops the run cleanly, the second exits at once.

While a recorded run is open (`armed`), the first SIGINT only asks it to stop: the
gateway issues no new call and drops the ones in flight, the run is closed as stopped
with what it has, and the synchronous API then raises `Interrupted` (a
KeyboardInterrupt). The calls completed before it are in the journal and the store,
so a resume pays for none of them again. A second SIGINT runs the open runs' last
word (marking them stopped) and exits 130 at once. Outside a run, SIGINT is the usual
KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from prompt_descent.errors import RunStopped

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
LAST_WORD_SECONDS = 2.0
REASON = "interrupted (Ctrl-C)"

_requested = threading.Event()
_last_words: dict[str, Callable[[], None]] = {}  # run id -> mark it stopped


class Interrupted(RunStopped):
    """The user asked the run to stop (Ctrl-C)."""


class RunInterrupted(KeyboardInterrupt):
    """What a synchronous API call raises after the run it started stopped for a Ctrl-C."""

    def __init__(self, run_id: str, resume: str | None) -> None:
        super().__init__(f"run {run_id} stopped: {REASON}")
        self.run_id = run_id
        self.resume = resume  # the command that finishes the run, if it can be resumed


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raise Interrupted once a stop was asked for."""
    if _requested.is_set():
        raise Interrupted(REASON)


@contextlib.contextmanager
def armed(run_id: str, last_word: Callable[[], None]) -> Iterator[None]:
    """While inside, a Ctrl-C stops run `run_id` instead of raising KeyboardInterrupt."""
    _last_words[run_id] = last_word
    try:
        yield
    finally:
        _last_words.pop(run_id, None)


def _on_sigint(_signum: int, _frame: object) -> None:
    if not _last_words:
        raise KeyboardInterrupt
    if not _requested.is_set():
        _requested.set()
        print(
            "\nstopping: no new calls, the run keeps what it has (Ctrl-C again to quit now)",
            file=sys.stderr,
            flush=True,
        )
        return
    # The main thread may hold the store's locks where the signal caught it: the last
    # words run on a thread of their own, given a moment, and then the process goes.
    worker = threading.Thread(target=_say_last_words, daemon=True)
    worker.start()
    worker.join(LAST_WORD_SECONDS)
    print("quit; the calls made so far are in the journal", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


def _say_last_words() -> None:
    for last_word in list(_last_words.values()):
        with contextlib.suppress(Exception):
            last_word()


@contextlib.contextmanager
def handling_sigint() -> Iterator[None]:
    """Install the two-step Ctrl-C for the duration (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
