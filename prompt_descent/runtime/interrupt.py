"""Ctrl-C: the first stops the run cleanly, the second exits at once.

While a recorded run is open (`armed`), the first SIGINT only asks it to stop: the
gateway issues no new call and drops the ones in flight, the run is closed as stopped
with what it has, and the synchronous API then raises `Interrupted` (a
KeyboardInterrupt). The calls completed before it are in the journal and the store,
so a resume pays for none of them again. A second SIGINT runs the open runs' last
word (marking them stopped) and exits 130 at once. Outside a run, SIGINT is the usual
KeyboardInterrupt.

A write to the store is a `critical` section: the quit waits for the ones open to end
(a run row half-updated by the flow would make the last word conflict with it, and the
exit would leave the run `running`), and no new one starts once it has begun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from prompt_descent.errors import RunStopped

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
LAST_WORD_SECONDS = 2.0
REASON = "interrupted (Ctrl-C)"

_requested = threading.Event()
_last_words: dict[str, Callable[[], None]] = {}  # run id -> mark it stopped
_sections = threading.Condition()  # guards the counts below
_open_sections: dict[int, int] = {}  # thread id -> depth of the critical sections it is in
_quitting: list[int] = []  # the thread saying the last words, once the quit began
_quit_when_main_leaves = threading.Event()


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


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A write that a quit must not cut in half: a second Ctrl-C waits for it to end."""
    me = threading.get_ident()
    with _sections:
        while _quitting and _quitting[0] != me:  # the process is about to exit
            _sections.wait()
        _open_sections[me] = _open_sections.get(me, 0) + 1
    try:
        yield
    finally:
        with _sections:
            _open_sections[me] -= 1
            if not _open_sections[me]:
                del _open_sections[me]
            _sections.notify_all()
        if (
            me == threading.main_thread().ident
            and me not in _open_sections
            and _quit_when_main_leaves.is_set()
        ):
            _quit()


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
    if threading.get_ident() in _open_sections:  # caught inside a write: quit as it ends
        _quit_when_main_leaves.set()
        return
    _quit()


def _quit() -> None:
    """Say the last words once the writes under way have ended, and exit."""
    # The main thread may hold other locks where the signal caught it: the last words
    # run on a thread of their own, given a moment, and then the process goes.
    worker = threading.Thread(target=_say_last_words, daemon=True)
    worker.start()
    worker.join(2 * LAST_WORD_SECONDS)  # a moment for the writes, one for the words
    print("quit; the calls made so far are in the journal", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


def _say_last_words() -> None:
    me = threading.get_ident()
    deadline = time.monotonic() + LAST_WORD_SECONDS
    with _sections:
        _quitting.append(me)
        while _open_sections and time.monotonic() < deadline:
            _sections.wait(deadline - time.monotonic())
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
