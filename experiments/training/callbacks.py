"""The callbacks the runner puts in every Trainer beside Lightning's ModelCheckpoint.

- `NonFiniteLossGuard`: a diverging run stops at the first non-finite loss, before a
  checkpoint with NaN weights can replace a good one;
- `SaveOnInterrupt`: a SIGTERM (or a first Ctrl-C, see `interrupts`) saves `last.ckpt`
  at the batch boundary where Lightning stops;
- `RunGuard`: both guards in one callback, which is what the runner installs;
- `ModelCheckpoint`: Lightning's, without its work on every training step when it saves
  at validation or epoch ends only;
- `HookProfiler`: Lightning's default "no profiler" without its cost per hook call.
"""

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


class SaveOnInterrupt(Callback):
    """Save `last.ckpt` when Lightning stops training for a SIGTERM (at a batch boundary).

    A KeyboardInterrupt raised mid-step is not saved: the weights may be half-updated,
    and the last epoch-end checkpoint is the better one to keep.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        stop = isinstance(exception, SIGTERMException) or outage.is_outage(exception)
        if not stop or not trainer.training:
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
    With `notice` (tracking/outage.py), a step that ends after the store stopped answering
    says that it answers again: the step's metrics were logged.
    """

    def __init__(self, path: Path, notice: outage.OutageNotice | None = None) -> None:
        super().__init__(path)
        self.notice = notice

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.notice is not None and self.notice.down_since is not None:
            self.notice.back_if_down()

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.notice is not None and self.notice.down_since is not None:
            self.notice.back_if_down()


#: The one context `HookProfiler.profile` returns: nullcontext keeps no state, so it nests.
_NOT_PROFILED = contextlib.nullcontext()


class HookProfiler(PassThroughProfiler):
    """Lightning's default profiler (PassThroughProfiler: records nothing) minus its cost.

    Lightning wraps every hook call in `trainer.profiler.profile(name)`: about 90 per
    training step in a run (six per callback, the module's and the strategy's hooks, the
    loops), each a new generator-based context manager that then calls the no-op
    `start`/`stop`, about 1 us each. Returning one shared `nullcontext` instead records the
    same (nothing) at a fifth of the cost: on S1.2, where a step is about a millisecond,
    that is what keeps the run's own callbacks within 5% of Lightning's floor
    (docs/benchmarks.md, Speed). The runner uses it unless `--trainer.profiler` names one.
    """

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOT_PROFILED


class ModelCheckpoint(lightning_callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, with its two costs on every training step removed.

    Lightning formats every callback's `state_key` for every hook it calls (six per step;
    for ModelCheckpoint a repr of its settings, ~1 us), and ModelCheckpoint's
    `on_train_batch_end` checks its step and time triggers on every step. Here the key is
    computed once (the settings it is made of are fixed at construction) and, when neither
    `every_n_train_steps` nor `train_time_interval` is given (the runner's checkpoints save
    at validation or epoch ends), `on_train_batch_end` does nothing, as Lightning's own
    would after its checks. The class keeps Lightning's name, so its `state_key` (which
    starts with the class name) is Lightning's and checkpoints written before this class
    existed resume with their callback state.
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
