"""The project's error types, by what happened, and the exit code each one means
(docs/faults-and-security.md: `Refused` exits 2, `RunFailed` 1, an interrupt 128 + signal).
"""

from __future__ import annotations

from pathlib import Path


class Refused(Exception):
    """Refused before anything was trained or recorded (exit 2)."""

    exit_code = 2


class ConfigError(Refused, ValueError):
    """A configuration problem found before anything is trained or tracked."""


class StoreError(Refused):
    """The tracking store or the local checkpoint folder cannot be used; nothing was run."""


class RunFailed(RuntimeError):
    """A run that had started failed (exit 1); `reason` becomes its `failure_reason` tag."""

    exit_code = 1
    reason = "run_failed"


class StoreUnreachable(RunFailed):
    """The tracking store stopped answering mid-run for longer than the client waits; the
    run's checkpoint is kept and the message says how to resume (tracking/outage.py)."""

    reason = "store_unreachable"


class CheckpointError(RunFailed):
    """A checkpoint file cannot be read (truncated, corrupt, or not written by this project)."""

    reason = "bad_checkpoint"


class CheckpointWriteError(RunFailed):
    """A checkpoint could not be written (full disk, unwritable folder); the old one is kept."""

    reason = "checkpoint_write"

    def __init__(self, path: Path, error: OSError) -> None:
        path = path.absolute()
        kept = (
            f"; the previous checkpoint {path} is intact"
            if path.exists()
            else "; no earlier checkpoint existed at this path"
        )
        super().__init__(
            f"cannot write checkpoint {path}: {error.strerror or error}{kept}. "
            f"Free space or fix permissions under {path.parent}."
        )
        self.path = path


class NonFiniteLossError(RunFailed):
    """Training diverged: the loss (or the weights) stopped being finite numbers."""

    reason = "non_finite_loss"


def failure_reason(exc: BaseException) -> str:
    """Short value of the `failure_reason` tag of a FAILED run."""
    return getattr(exc, "reason", None) or type(exc).__name__
