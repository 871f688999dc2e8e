"""Ctrl-C and SIGTERM: stop a run at a batch boundary, then say how to resume it."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from experiments.tracking import store

_last_signal: int | None = None


def last_signal() -> int | None:
    """The signal that interrupted the last run in this process (SIGINT/SIGTERM), if any."""
    return _last_signal


class InterruptHandler:
    """Ctrl-C and SIGTERM stop a run at the next batch boundary rather than mid-step.

    While Lightning trains or tests it has its own SIGTERM handler, which makes the loops
    raise `SIGTERMException` at the end of the current batch (and calls this handler too).
    A first Ctrl-C is turned into that SIGTERM; a second one, or a signal outside
    training, raises KeyboardInterrupt at once. Only installable in the main thread;
    elsewhere (a study's worker threads) it does nothing.
    """

    def __init__(self) -> None:
        self._handler = self._handle  # one bound method, so identity checks work
        self._previous: dict[int, Any] = {}
        self._forwarded = False
        self.signum: int | None = None

    def install(self) -> InterruptHandler:
        global _last_signal
        _last_signal = None
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        global _last_signal
        if signum == signal.SIGTERM and self._forwarded:
            self._forwarded = False  # our own forwarded Ctrl-C, already counted
            return
        first = self.signum is None
        if first:
            self.signum = _last_signal = signum
        trainer_active = signal.getsignal(signal.SIGTERM) is not self._handler
        if first and trainer_active:
            name = signal.Signals(signum).name
            print(
                f"\n{name}: stopping after the current batch and saving a checkpoint "
                "(press Ctrl-C again to stop at once) ...",
                file=sys.stderr,
                flush=True,
            )
            if signum == signal.SIGINT:
                self._forwarded = True
                os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def resume_command(run_id: str, uri: str) -> str:
    flag = "" if uri == store.DEFAULT_TRACKING_URI else f" --tracking-uri {uri}"
    return f"python -m experiments run --resume {run_id}{flag}"


def interrupted_message(run_id: str, uri: str) -> str:
    """What an interrupted run prints: where its checkpoint is and how to resume it."""
    checkpoint = store.checkpoint_dir(uri, run_id) / "last.ckpt"
    if checkpoint.is_file():
        return (
            f"Run {run_id} was interrupted and marked KILLED; checkpoint kept at {checkpoint}.\n"
            f"Resume it with: {resume_command(run_id, uri)}"
        )
    return (
        f"Run {run_id} was interrupted before its first checkpoint and marked KILLED; "
        "there is nothing to resume: run the experiment again."
    )
