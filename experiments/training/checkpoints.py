"""Checkpoint files: written atomically (`AtomicCheckpointIO`), read weights-only
(`read_checkpoint`)."""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from experiments.errors import CheckpointError, CheckpointWriteError


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
