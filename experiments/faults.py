"""What keeps finished work and the MLflow store honest when a run goes wrong.

Used by the runner (`python -m experiments run ...`) and by `python -m experiments doctor`:

- `check_tracking_server` / `check_local_storage`: fail fast, before anything trains, when the
  tracking server is unreachable or the local store/checkpoint folder cannot be written;
- `process_tags` / `mark_orphaned_runs`: every run records which process owns it, so a run
  left RUNNING by a killed process is found later and marked FAILED;
- `InterruptHandler` + `SaveOnInterrupt`: Ctrl-C or SIGTERM stop training at the next batch
  boundary, save `last.ckpt`, and the run ends KILLED with a resume command;
- `NonFiniteLossGuard`: a diverging run stops at the first non-finite loss, before a
  checkpoint with NaN weights can replace a good one (`RunGuard` is both in one callback);
- `RunCheckpoint`: Lightning's ModelCheckpoint without its per-step costs;
- `AtomicCheckpointIO`: checkpoints are written to a temporary file and renamed, so a full
  disk never leaves a truncated `last.ckpt`;
- `read_checkpoint`: checkpoints are only ever loaded with `weights_only=True`.
"""

from __future__ import annotations

import functools
import io
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from experiments import tracking
from experiments.config import ConfigError

#: Seconds a tracking server or database gets to answer the pre-flight check.
REACHABILITY_TIMEOUT = 5.0

#: Tags that say which process owns a RUNNING run (see `process_state`).
PID_TAG, HOST_TAG, START_TAG, BOOT_TAG = (
    "process.pid",
    "process.host",
    "process.start",
    "process.boot_id",
)


# --------------------------------------------------------------------------- errors


class StoreError(ConfigError):
    """The tracking store or the local checkpoint folder cannot be used; nothing was run."""


class CheckpointError(ConfigError):
    """A checkpoint file cannot be read (truncated, corrupt, or not written by this project)."""

    reason = "bad_checkpoint"


class CheckpointWriteError(RuntimeError):
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


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss (or the weights) stopped being finite numbers."""

    reason = "non_finite_loss"


def failure_reason(exc: BaseException) -> str:
    """Short value of the `failure_reason` tag of a FAILED run."""
    return getattr(exc, "reason", None) or type(exc).__name__


# --------------------------------------------------------------------------- pre-flight


def redact(uri: str) -> str:
    """`uri` without a password, for messages (`http://user:secret@host` -> `user:***`)."""
    parsed = urlparse(uri)
    if not parsed.password:
        return uri
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")).geturl()


def check_tracking_server(uri: str, timeout: float = REACHABILITY_TIMEOUT) -> None:
    """Raise StoreError at once if a remote tracking store does not answer.

    MLflow itself retries an unreachable HTTP server for minutes
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7 with exponential backoff) and SQLAlchemy retries a
    database 10 times; one short request up front turns that into an immediate, clear error.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # it answered: reachable, whatever it thinks of /health
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(
                f"tracking server {redact(uri)} is unreachable ({reason}); nothing was trained or "
                "recorded. Start it (`python -m experiments server` or `python -m experiments "
                "ui`) or point --tracking-uri / MLFLOW_TRACKING_URI at a running server."
            ) from exc
    elif scheme in ("postgresql", "mysql", "mssql"):
        default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[scheme]
        host, port = parsed.hostname or "localhost", parsed.port or default_port
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise StoreError(
                f"tracking database {scheme}://{host}:{port} is unreachable "
                f"({exc.strerror or exc}); nothing was trained or recorded."
            ) from exc


def check_local_storage(uri: str) -> None:
    """Raise StoreError unless the local store folder and its checkpoint folder are writable."""
    root = tracking.local_root(uri)
    folder = root / "checkpoints"
    for path in (root, folder):
        if path.exists() and not path.is_dir():
            raise StoreError(
                f"{path} is not a directory: the store folder {root} must be a writable "
                "directory for the tracking database and checkpoints; nothing was trained or "
                "recorded. Move the file away or point --tracking-uri elsewhere."
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as exc:
        where = exc.filename or folder
        raise StoreError(
            f"cannot write to {where} ({exc.strerror or exc}): the store folder {root} must be "
            "a writable directory for the tracking database and checkpoints; nothing was "
            "trained or recorded. Fix its permissions or point --tracking-uri elsewhere."
        ) from exc


# --------------------------------------------------------------------------- orphaned runs


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags naming the process that owns a run: host, pid, its start time and the boot id."""
    pid = os.getpid() if pid is None else pid
    stat = _proc_stat(pid)
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        # starttime (field 22 of /proc/PID/stat) tells a reused pid from the original process.
        START_TAG: stat[19] if stat else "unknown",
        BOOT_TAG: _boot_id(),
    }


def process_state(tags: Mapping[str, str]) -> str:
    """'alive', 'dead' or 'unknown' (no process tags, or another host) for a run's tags."""
    pid_text = tags.get(PID_TAG, "")
    if not pid_text.isdigit() or tags.get(HOST_TAG) != socket.gethostname():
        return "unknown"
    if tags.get(BOOT_TAG, "unknown") not in ("unknown", _boot_id()):
        return "dead"  # the machine rebooted since
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is not None:
        if stat[0] in ("Z", "X"):  # zombie: killed, not yet reaped
            return "dead"
        if tags.get(START_TAG, "unknown") not in ("unknown", stat[19]):
            return "dead"  # the pid now belongs to another process
    return "alive"


def running_runs(client) -> list:
    """Every RUNNING run in every active experiment of the store."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs: list = []
    if not experiment_ids:
        return runs
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def mark_orphaned_runs(client, found_by: str, *, dry_run: bool = False) -> list:
    """Mark FAILED each RUNNING run whose process on this host is gone; returns those runs."""
    orphans = [r for r in running_runs(client) if process_state(r.data.tags) == "dead"]
    if dry_run:
        return orphans
    for run in orphans:
        tags = run.data.tags
        client.set_tag(run.info.run_id, "failure_reason", "orphaned")
        client.set_tag(
            run.info.run_id,
            "end_reason",
            f"process {tags.get(PID_TAG)} on {tags.get(HOST_TAG)} ended without closing the run "
            f"(killed or crashed); marked FAILED by {found_by}",
        )
        client.set_terminated(run.info.run_id, "FAILED")
    return orphans


# --------------------------------------------------------------------------- checkpoints


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `state_key` is computed once.

    Lightning formats every callback's state_key for every hook call on every step (as a
    profiler label); ModelCheckpoint rebuilds it from its settings each time (a few
    microseconds), which two checkpoint callbacks pay ~14 times per step. The settings never change after
    construction, so the key can be kept. It is also the name of the callback's state in a
    checkpoint, so it is spelled as ModelCheckpoint's: checkpoints resume either way.
    """

    @functools.cached_property
    def state_key(self) -> str:
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__) :]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning's version checks the trainer state on every step before finding that
        # neither step- nor time-based saving is configured; ours never configures them.
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename it into place.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in
    the system temp dir; when that is another filesystem the final move is a copy that
    truncates the old checkpoint first, so a full disk could leave a broken `last.ckpt`.
    Here the rename is within one folder (atomic), and any OSError names the path.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise CheckpointWriteError(path, exc) from exc
        finally:
            if tmp is not None:
                with suppress(OSError):
                    os.unlink(tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None):
        # Whatever the caller asks, never unpickle arbitrary objects.
        return read_checkpoint(Path(path))


def read_checkpoint(path: Path, *, for_training: bool = False) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; CheckpointError names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        if "weights_only" in detail or "Unsupported global" in detail:
            why = "it holds Python objects that are not plain tensors and values, so it was not written by this project and is refused"
        else:
            why = "it is truncated or corrupt"
        raise CheckpointError(f"checkpoint {path} cannot be read: {why} ({detail})") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint (no state_dict)")
    if for_training:
        missing = [k for k in ("loops", "optimizer_states", "epoch") if k not in checkpoint]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} cannot resume training: it lacks {', '.join(missing)} "
                "(a weights-only checkpoint)"
            )
    return checkpoint


# --------------------------------------------------------------------------- divergence


def _lr_hint(pl_module) -> str:
    lr = getattr(pl_module, "hparams", {}).get("lr")
    return f" with model.lr={lr}; lower --model.lr" if lr is not None else ""


class NonFiniteLossGuard(Callback):
    """Stop at the first non-finite training loss, or non-finite weights before a checkpoint.

    Lightning runs ModelCheckpoint after every other callback in the same hook, so the
    weight check in `on_validation_end` / `on_train_epoch_end` happens before a checkpoint
    of NaN weights could be written over `last.ckpt` or `best.ckpt`.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        # A scalar loss (the usual case) is checked as a Python float: a third of the cost
        # of torch.isfinite(...).all() on every step of a sub-millisecond model.
        finite = (
            math.isfinite(loss.item())
            if loss.numel() == 1
            else bool(torch.isfinite(loss.detach()).all())
        )
        if not finite:
            raise NonFiniteLossError(
                f"training loss is {loss.detach().float().mean().item()} at epoch "
                f"{trainer.current_epoch}, batch {batch_idx} (global step {trainer.global_step})"
                f": training diverged{_lr_hint(pl_module)}. No checkpoint of these weights "
                "was saved."
            )

    def _check_weights(self, trainer, pl_module) -> None:
        for name, param in pl_module.named_parameters():
            if not bool(torch.isfinite(param.detach()).all()):
                raise NonFiniteLossError(
                    f"weight {name} is not finite at epoch {trainer.current_epoch} (global step "
                    f"{trainer.global_step}): training diverged{_lr_hint(pl_module)}. No "
                    "checkpoint of these weights was saved."
                )

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check_weights(trainer, pl_module)


# --------------------------------------------------------------------------- interrupts

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


class SaveOnInterrupt(Callback):
    """Save `last.ckpt` when Lightning stops training for a SIGTERM (at a batch boundary).

    A KeyboardInterrupt raised mid-step is not saved: the weights may be half-updated,
    and the last epoch-end checkpoint is the better one to keep.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        try:
            # weights_only=False here means the full training state (optimizer, loops).
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved = True
        except CheckpointWriteError as exc:
            print(f"warning: {exc}", file=sys.stderr)


class RunGuard(NonFiniteLossGuard, SaveOnInterrupt):
    """Both guards as one callback, which is what the runner installs.

    Lightning calls every hook of every callback on every step (about six per step, each
    wrapped in a profiler context), so one callback instead of two saves that dispatch
    work on every step, which matters when a step takes under a millisecond (S1.2).
    """


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def interrupted_message(run_id: str, uri: str) -> str:
    """What an interrupted run prints: where its checkpoint is and how to resume it."""
    checkpoint = tracking.checkpoint_dir(uri, run_id) / "last.ckpt"
    flag = "" if uri == tracking.DEFAULT_TRACKING_URI else f" --tracking-uri {uri}"
    if checkpoint.is_file():
        return (
            f"Run {run_id} was interrupted and marked KILLED; checkpoint kept at {checkpoint}.\n"
            f"Resume it with: python -m experiments run --resume {run_id}{flag}"
        )
    return (
        f"Run {run_id} was interrupted before its first checkpoint and marked KILLED; "
        "there is nothing to resume: run the experiment again."
    )
