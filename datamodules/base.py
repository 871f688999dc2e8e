"""Shared logic of the in-memory datamodules: validation split, normalization, loaders, lineage.

A subclass only has to locate and parse its files (``_load_raw``) and describe the data
(``input_shape``, ``class_names``, ``dataset_name``, ``mean``/``std``). Everything that has to
behave identically across datasets lives here: the seeded train/validation split, the
conversion to normalized float32 tensors, the ``TensorBatchLoader``-based loaders (sharded
across DDP ranks when a trainer is attached) and the ``lineage`` record that experiments
log to MLflow so a run can be traced back to the exact data it saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info

from datamodules.tensor_loader import BatchTransform, TensorBatchLoader

#: Values ``lineage["source"]`` can take: the user's ``data_dir``, a system-wide copy
#: (e.g. a Debian dataset package), or a download made by torchvision.
SOURCES = ("explicit", "system", "download")

#: the last splits made in this process: (key, (tensors, lineage, summary)); see setup()
_SPLITS: tuple | None = None


class DataNotFoundError(FileNotFoundError):
    """The dataset files were found in none of the places searched (message lists them)."""


class DataFormatError(ValueError):
    """A dataset file exists but its content is not what the format promises (message names it)."""


@dataclass
class RawSplits:
    """What a subclass's ``_load_raw`` returns: uint8 images (N, C, H, W) and int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    source_path: str
    extra: dict[str, str | int] = field(default_factory=dict)


def check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass; batch_size=True is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer")
    return value


def check_non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r}: must be a non-negative integer (0 allowed)")
    return value


def check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r}: must be an integer")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: must be true or false")
    return value


class InMemoryDataModule(LightningDataModule):
    """Base class: holds all splits in memory as tensors and serves them in slices.

    Args:
        val_size: samples carved out of the training set for validation (0 = no validation).
        split_seed: seed of the permutation that chooses the validation samples.
        batch_size: training batch size.
        eval_batch_size: batch size of the validation and test loaders.
        normalize: standardize with the dataset's ``mean``/``std`` (otherwise pixels are
            only scaled to [0, 1]).

    After ``setup()``: ``train_x, train_y, val_x, val_y, test_x, test_y`` (x float32
    (N, C, H, W), y int64) and ``lineage``.
    """

    #: Per-channel mean/std of the training pixels in [0, 1]; set by subclasses.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __init__(
        self,
        val_size: NonNegativeInt = 0,
        split_seed: int = 0,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.val_size = check_non_negative_int("val_size", val_size)
        self.split_seed = check_int("split_seed", split_seed)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
        self.normalize = check_bool("normalize", normalize)
        self._is_setup = False
        self._lineage: dict[str, str | int] | None = None

    # --- description of the data (available without loading it) -------------------------

    @property
    def input_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dataset_name(self) -> str:
        """Short identifier of the data, used as the MLflow experiment name."""
        raise NotImplementedError

    # --- hooks for subclasses -------------------------------------------------------------

    def _load_raw(self) -> RawSplits:
        """Locate (download if allowed), parse and validate the files."""
        raise NotImplementedError

    def _train_transform(self) -> BatchTransform | None:
        """Batched augmentation for training batches; None = no augmentation."""
        return None

    # --- setup ----------------------------------------------------------------------------

    @property
    def lineage(self) -> dict[str, str | int]:
        """Where the data came from and how it was split (for experiment tracking)."""
        if self._lineage is None:
            raise RuntimeError(f"{type(self).__name__}.lineage is only available after setup()")
        return dict(self._lineage)

    def setup(self, stage: str | None = None) -> None:
        # Lightning calls setup once per stage (fit, then test, ...); the data is the same
        # for all stages, so load once and keep the split fixed.
        if self._is_setup:
            return
        global _SPLITS
        key = self._splits_key()
        if key is None:
            tensors, self._lineage, self.data_summary = self._split()
        else:
            if _SPLITS is None or _SPLITS[0] != key:
                _SPLITS = (key, self._split())
            # The splits are shared by the process's later datamodules (a study's trials):
            # each gets its own copies, so nothing a run does to its tensors reaches the next.
            made, lineage, self.data_summary = _SPLITS[1]
            tensors, self._lineage = [t.clone() for t in made], dict(lineage)
        names = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        for name, tensor in zip(names, tensors, strict=True):
            setattr(self, name, tensor)
        self._is_setup = True
        rank_zero_info(self.data_summary)

    def _splits_key(self) -> tuple | None:
        """What determines the splits, if a subclass can say it without parsing its files:
        the splits are then made once per process while the key stays the same."""
        return None

    def _split(self) -> tuple[tuple[torch.Tensor, ...], dict[str, str | int], str]:
        """Load, check, split and normalize: the six tensors, the lineage, the summary line."""
        raw = self._load_raw()
        self._check_raw(raw)
        n_train_total = len(raw.train_x)
        if self.val_size >= n_train_total:
            raise ValueError(
                f"val_size={self.val_size}: must be smaller than the number of training "
                f"samples ({n_train_total}) of {self.dataset_name}"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(n_train_total, generator=generator)
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        train_x = self._to_float(raw.train_x[train_idx])
        val_x = self._to_float(raw.train_x[val_idx])
        test_x = self._to_float(raw.test_x)
        tensors = (
            train_x,
            raw.train_y[train_idx].long(),
            val_x,
            raw.train_y[val_idx].long(),
            test_x,
            raw.test_y.long(),
        )
        lineage = {
            "dataset": self.dataset_name,
            "source": raw.source,
            "source_path": raw.source_path,
            "split_seed": self.split_seed,
            "train_size": len(train_x),
            "val_size": len(val_x),
            "test_size": len(test_x),
            "normalize": int(self.normalize),
            **raw.extra,
        }
        #: one line saying which data this is (the runner prints it before training)
        summary = (
            f"{type(self).__name__}: using {raw.source} data from {raw.source_path} "
            f"(train {len(train_x)} / val {len(val_x)} / test {len(test_x)}, "
            f"split_seed={self.split_seed})"
        )
        return tensors, lineage, summary

    def _check_raw(self, raw: RawSplits) -> None:
        if raw.source not in SOURCES:
            raise AssertionError(f"source={raw.source!r} is not one of {SOURCES}")
        for split, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
            if tuple(x.shape[1:]) != tuple(self.input_shape) or x.dtype != torch.uint8:
                raise DataFormatError(
                    f"{self.dataset_name} {split} images: expected uint8 (N, "
                    f"{', '.join(map(str, self.input_shape))}), got {x.dtype} {tuple(x.shape)}"
                )
            if len(y) != len(x):
                raise DataFormatError(
                    f"{self.dataset_name} {split}: {len(x)} images but {len(y)} labels"
                )

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize_pixels(x.to(torch.float32).div_(255.0))

    def normalize_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 1], (N, C, H, W) -> the model's input: (x - mean) / std per
        channel when `normalize` is on. In place (returns `x`): the splits are large."""
        if self.normalize:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            x.sub_(mean).div_(std)
        return x

    # --- loaders --------------------------------------------------------------------------

    def _shard(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _shuffle_seed(self) -> int:
        # Follow seed_everything() like Lightning's own DistributedSampler does (it exports
        # PL_GLOBAL_SEED to every rank); without it, fall back to split_seed so that runs stay
        # reproducible and all ranks still agree on the permutation.
        seed = os.environ.get("PL_GLOBAL_SEED")
        return int(seed) if seed is not None else self.split_seed

    def _loader(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        transform: BatchTransform | None = None,
    ) -> TensorBatchLoader:
        num_replicas, rank = self._shard()
        return TensorBatchLoader(
            x,
            y,
            batch_size,
            shuffle=shuffle,
            seed=self._shuffle_seed(),
            transform=transform,
            num_replicas=num_replicas,
            rank=rank,
        )

    def _ensure_setup(self) -> None:
        # Lightning always calls setup() before asking for loaders; this covers direct use.
        if not self._is_setup:
            self.setup()

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # The loaders yield CPU tensors: on a CPU run Lightning's generic walk over the batch
        # (~40 us per step) would move nothing. Other devices get the usual transfer.
        if device.type == "cpu" and all(
            isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in batch
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> TensorBatchLoader:
        self._ensure_setup()
        return self._loader(
            self.train_x, self.train_y, self.batch_size, True, self._train_transform()
        )

    def val_dataloader(self) -> TensorBatchLoader | list:
        self._ensure_setup()
        if len(self.val_x) == 0:
            # Lightning treats an empty list as "no validation" and skips the loop.
            return []
        return self._loader(self.val_x, self.val_y, self.eval_batch_size, False)

    def test_dataloader(self) -> TensorBatchLoader:
        self._ensure_setup()
        return self._loader(self.test_x, self.test_y, self.eval_batch_size, False)

    def predict_dataloader(self) -> TensorBatchLoader:
        return self.test_dataloader()
