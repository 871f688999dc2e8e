"""What the runner puts in every Trainer: `RunGuard` (non-finite loss, interrupts), and
Lightning's ModelCheckpoint and default profiler without their cost on every step."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from lightning.pytorch import callbacks as lightning_callbacks
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException

from experiments.errors import CheckpointWriteError, NonFiniteLossError
from experiments.tracking import outage


def _lr_hint(pl_module) -> str:
    lr = getattr(pl_module, "hparams", {}).get("lr")
    return f" with model.lr={lr}; lower --model.lr" if lr is not None else ""


class RunGuard(Callback):
    """The runner's guards, one callback (Lightning dispatches every hook to every callback,
    which costs per step when a step takes under a millisecond, S1.2):

    - a non-finite training loss, or non-finite weights before a checkpoint, stop training
      (Lightning runs ModelCheckpoint after every other callback in the same hook, so NaN
      weights are never written over `last.ckpt` or `best.ckpt`);
    - a SIGTERM (or a first Ctrl-C, see `interrupts`) or a store outage saves `last.ckpt`
      at the batch boundary where Lightning stops; a KeyboardInterrupt raised mid-step is
      not saved (the weights may be half-updated: the last epoch-end checkpoint is better);
    - with `notice` (tracking/outage.py), a step that ends after the store stopped
      answering says that it answers again: the step's metrics were logged.
    """

    def __init__(self, path: Path, notice: outage.OutageNotice | None = None) -> None:
        self.path = Path(path)
        self.notice = notice

    def _store_back(self) -> None:
        if self.notice is not None and self.notice.down_since is not None:
            self.notice.back_if_down()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            # A scalar loss (the usual case) is checked as a Python float: a third of the
            # cost of torch.isfinite(...).all() on every step of a sub-millisecond model.
            finite = (
                math.isfinite(loss.item())
                if loss.numel() == 1
                else bool(torch.isfinite(loss.detach()).all())
            )
            if not finite:
                raise NonFiniteLossError(
                    f"training loss is {loss.detach().float().mean().item()} at epoch "
                    f"{trainer.current_epoch}, batch {batch_idx} (global step "
                    f"{trainer.global_step}): training diverged{_lr_hint(pl_module)}. No "
                    "checkpoint of these weights was saved."
                )
        self._store_back()

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
        self._store_back()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check_weights(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        stop = isinstance(exception, SIGTERMException) or outage.is_outage(exception)
        if not stop or not trainer.training:
            return
        try:
            # weights_only=False here means the full training state (optimizer, loops).
            trainer.save_checkpoint(self.path, weights_only=False)
        except CheckpointWriteError as exc:
            print(f"warning: {exc}", file=sys.stderr)


#: The one context `HookProfiler.profile` returns: nullcontext keeps no state, so it nests.
_NOT_PROFILED = contextlib.nullcontext()


class HookProfiler(PassThroughProfiler):
    """Lightning's default profiler (PassThroughProfiler: records nothing) minus its cost
    per hook call: why and how much, docs/internals.md and docs/benchmarks.md (Speed). The
    runner uses it unless `--trainer.profiler` names one."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOT_PROFILED


class ModelCheckpoint(lightning_callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, with its two costs on every training step removed
    (docs/internals.md): `state_key` is computed once (its settings are fixed at
    construction), and `on_train_batch_end` does nothing without a step or time trigger.
    The class keeps Lightning's name, so its `state_key` (which starts with the class name)
    is Lightning's and older checkpoints resume with their callback state.
    """

    def __init__(self, **kwargs) -> None:  # by keyword: the triggers are read from them
        super().__init__(**kwargs)
        self._per_step = bool(kwargs.get("every_n_train_steps")) or (
            kwargs.get("train_time_interval") is not None
        )
        self._key: str | None = None

    @property
    def state_key(self) -> str:
        if self._key is None:
            self._key = super().state_key
        return self._key

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._per_step:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
