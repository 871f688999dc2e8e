"""Everything a run needs, checked before anything is created: `--check`, and every real run.

    python -m experiments run s1-mlp --check
    python -m experiments run s1-mlp --data.data_dir /nonexistent --check   # exit 2

`check_run(cfg, uri, register)` is called by `run --check` and, with the same arguments, by
the runner before it opens its MLflow run, so a check that passes here is the check the run
makes. It creates nothing (no `mlruns/`, no folder, no journal) and downloads nothing.
What is checked (Trainer arguments, seed, data headers, store, registry name) is listed
in docs/configuration.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError, StoreError
from experiments.tracking import health, store

#: numpy's (and so Lightning's seed_everything's) seed range
SEED_RANGE = (0, 2**32 - 1)
_BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")
_MAX_TIME = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")


def check_seed(seed: Any) -> None:
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise ConfigError(
            f"--seed {seed}: outside the seed range; allowed: a whole number from {low} to {high}"
        )


def _devices_available(accelerator: str) -> int:
    if accelerator in ("gpu", "cuda"):
        from lightning.pytorch.accelerators import CUDAAccelerator

        return CUDAAccelerator.auto_device_count() if CUDAAccelerator.is_available() else 0
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _check_accelerator(accelerator: Any) -> str:
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    name = str(accelerator).lower()
    cuda = (CUDAAccelerator, "CUDA GPU")
    needed = {"gpu": cuda, "cuda": cuda, "mps": (MPSAccelerator, "Apple MPS device")}
    if name in needed and not needed[name][0].is_available():
        raise ConfigError(
            f"--trainer.accelerator {accelerator}: no {needed[name][1]} on this machine; "
            "allowed here: cpu or auto"
        )
    return "cpu" if name == "auto" and _devices_available("cuda") == 0 else name


def _check_devices(devices: Any, accelerator: str) -> None:
    if devices in ("auto", -1, "-1", None):
        return
    available = _devices_available(accelerator)
    where = "CPU cores" if accelerator in ("cpu", "auto") else f"{accelerator} devices"
    allowed = f"allowed: 1 to {available}, -1 (all) or auto"
    if isinstance(devices, list):
        if not devices or any(not isinstance(d, int) or not 0 <= d < available for d in devices):
            raise ConfigError(
                f"--trainer.devices {devices}: this machine has {available} {where} "
                f"(indices 0 to {available - 1})"
            )
        return
    try:
        count = int(str(devices))
    except ValueError:
        raise ConfigError(f"--trainer.devices {devices}: not a count; {allowed}") from None
    if not 1 <= count <= available:
        raise ConfigError(
            f"--trainer.devices {devices}: this machine has {available} {where}; {allowed}"
        )


def _check_length(trainer: dict[str, Any]) -> None:
    """The run ends: max_epochs >= 1, unless max_steps (>= 1) bounds it (as in s4-mlp)."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    steps = -1 if steps is None else steps
    if steps == 0 or steps < -1:
        raise ConfigError(
            f"--trainer.max_steps {steps}: trains nothing; allowed: -1 (no step limit) or a "
            "whole number at least 1"
        )
    if epochs == 0 or (epochs is not None and epochs < -1):
        raise ConfigError(
            f"--trainer.max_epochs {epochs}: trains nothing; allowed: a whole number at least 1"
        )
    if steps == -1 and (epochs is None or epochs == -1):
        shown = "null" if epochs is None else epochs
        raise ConfigError(
            f"--trainer.max_epochs {shown}: the run would have no end; allowed: a whole number "
            "at least 1, or -1/null together with --trainer.max_steps N (N at least 1)"
        )


def _check_limits(trainer: dict[str, Any]) -> None:
    for name in _BATCH_LIMITS:
        value = trainer.get(name)
        if value is None:
            continue
        # A whole number of batches (the parser may hand `30` over as 30.0, which Lightning
        # reads as 30 batches too), or a fraction of them.
        whole = isinstance(value, int | float) and not isinstance(value, bool)
        whole = whole and value >= 0 and float(value).is_integer()
        ok = whole or (isinstance(value, float) and 0.0 <= value <= 1.0)
        if name == "limit_train_batches" and value == 0:
            ok = False
        if not ok:
            least = 1 if name == "limit_train_batches" else 0
            shown = int(value) if isinstance(value, float) and value.is_integer() else value
            raise ConfigError(
                f"--trainer.{name} {shown}: out of range; allowed: a whole number of batches at "
                f"least {least}, or a fraction of them from 0.0 to 1.0"
            )


def _check_max_time(value: Any) -> None:
    if isinstance(value, dict):
        import datetime

        try:
            datetime.timedelta(**value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"--trainer.max_time {value}: not a duration; allowed: DD:HH:MM:SS or "
                "{days: D, hours: H, minutes: M}"
            ) from None
    elif value is not None and not _MAX_TIME.match(str(value)):
        raise ConfigError(
            f"--trainer.max_time {value}: not a duration; allowed: DD:HH:MM:SS "
            "(e.g. 00:01:30:00 for 90 minutes), or null"
        )


def check_trainer(trainer: dict[str, Any]) -> None:
    """The Trainer arguments against Lightning's rules and this machine, then Lightning's
    own checks: a Trainer built from them (no logger, no checkpoints; nothing is written)."""
    accelerator = _check_accelerator(trainer.get("accelerator") or "auto")
    _check_devices(trainer.get("devices"), accelerator)
    _check_length(trainer)
    _check_limits(trainer)
    _check_max_time(trainer.get("max_time"))
    _lightning_accepts(repr(sorted(trainer.items())), trainer)


_ACCEPTED: set[str] = set()


def _lightning_accepts(key: str, trainer: dict[str, Any]) -> None:
    """A Trainer built from these settings (once per process and settings)."""
    if key in _ACCEPTED:
        return
    import lightning as L

    try:
        L.Trainer(**{**trainer, "logger": False, "enable_checkpointing": False, "callbacks": []})
    except Exception as exc:  # Lightning's MisconfigurationException, ValueError, ...
        raise ConfigError(
            f"--trainer: Lightning refuses these settings: {' '.join(str(exc).split())}"
        ) from exc
    _ACCEPTED.add(key)


def check_data(data) -> str:
    """Where the datamodule's data is, from its files' headers (nothing downloaded)."""
    check = getattr(data, "check_files", None)
    if check is None:  # a datamodule of the user's own: found by prepare_data, in the run
        return f"{type(data).__name__}: not checked before the run"
    try:
        return check()
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError, DataFormatError
        raise ConfigError(f"data: {exc}") from exc


def _writable_folder(folder: Path, what: str) -> None:
    """`folder` is (or could be created as) a writable directory; nothing is created."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(f"{probe} is not a directory: {what} {folder} cannot be created there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write to {probe}: {what} {folder} needs a writable folder")


#: The tracking URI names a kind of store MLflow supports (no network, no files).
check_store_kind = store.check_kind


def check_store(uri: str) -> str:
    """The tracking URI names a kind of store MLflow supports, it answers, and the local
    folder for the database and checkpoints can be written; nothing is created."""
    check_store_kind(uri)
    health.check_tracking_server(uri)
    root = store.local_root(uri)
    _writable_folder(root, "the store folder")
    _writable_folder(root / "checkpoints", "the checkpoint folder")
    db = store.sqlite_path(uri)
    if db is not None and db.exists() and not db.is_file():
        raise StoreError(f"{db} is not a file: the tracking database must be a file")
    return store.redact(uri)


def check_register(name: str | None) -> None:
    """A registered model name MLflow accepts: not empty, no `/` or `:`, not a path."""
    if name is None:
        return
    bad = (
        not name.strip()
        or any(c in name for c in "/:")
        or name in (".", "..")
        or any(ord(c) < 32 for c in name)
    )
    if bad:
        raise ConfigError(
            f"--register {name!r}: not a model name; allowed: a non-empty name without "
            "'/', ':' or control characters (e.g. fashion-mlp)"
        )


def check_settings(cfg, uri: str, register: str | None = None) -> str:
    """The checks that need no model or data: seed, registry name, Trainer, store."""
    check_seed(cfg.seed)
    check_register(register)
    check_trainer(cfg.trainer)
    return f"store {check_store(uri)}"


def check_run(cfg, uri: str, register: str | None = None) -> list[str]:
    """Every check of a run (module docstring), as the runner makes them: what was found,
    or ConfigError / StoreError naming what is wrong."""
    where = check_settings(cfg, uri, register)
    _, data = cfg.instantiate()
    return [check_data(data), where]
