"""Small generated datasets written in the REAL on-disk formats.

Used by the tests and by benchmarks when the real data is not available (CIFAR-100 cannot
be downloaded offline). Because the files use the original formats (gzip IDX for
Fashion-MNIST, the ``cifar-100-python`` pickles for CIFAR-100), the datamodules load them
through exactly the code path used for the real data.

The images are learnable: every class has a fixed smooth random prototype and each sample
is its prototype plus pixel noise and a random brightness shift, so a tiny training run
reaches accuracy well above chance.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from datamodules.cifar100 import (
    CIFAR100_COARSE_LABEL_NAMES,
    CIFAR100_FINE_LABEL_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_FOLDER,
)
from datamodules.fashion_mnist import IDX_FILES


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write an unsigned-byte IDX file (gzip-compressed if the name ends in ``.gz``)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps the bytes identical across runs.
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def _prototypes(rng: np.random.Generator, n_classes: int, channels: int, size: int) -> np.ndarray:
    """Smooth per-class patterns in [0, 255]: random low-resolution grids upsampled 4x."""
    low = rng.uniform(0, 255, size=(n_classes, channels, size // 4, size // 4))
    return np.kron(low, np.ones((1, 1, 4, 4)))


def _samples(
    rng: np.random.Generator, prototypes: np.ndarray, labels: np.ndarray, noise: float = 40.0
) -> np.ndarray:
    images = prototypes[labels]
    images = images + rng.normal(0.0, noise, size=images.shape)
    images = images + rng.uniform(-20, 20, size=(len(labels), 1, 1, 1))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_classes).astype(np.int64)


def write_fashion_mnist(
    root: str | Path, n_train: int = 600, n_test: int = 200, seed: int = 0
) -> Path:
    """Write the four gzip IDX files under ``<root>/FashionMNIST/raw/``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    protos = _prototypes(rng, 10, 1, 28)
    raw = root / "FashionMNIST" / "raw"
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _balanced_labels(rng, n, 10)
        images = _samples(rng, protos, labels)[:, 0]
        write_idx(raw / f"{IDX_FILES[f'{split}_images']}.gz", images)
        write_idx(raw / f"{IDX_FILES[f'{split}_labels']}.gz", labels)
    return root


def write_cifar100(
    root: str | Path, n_train_per_class: int = 5, n_test_per_class: int = 2, seed: int = 0
) -> Path:
    """Write ``<root>/cifar-100-python/{train,test,meta}`` (protocol-2 pickles like the
    original), with the real fine/coarse names and membership; returns ``root``."""
    root = Path(root)
    folder = root / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    protos = _prototypes(rng, 100, 3, 32)
    fine_to_coarse = np.asarray(CIFAR100_FINE_TO_COARSE, dtype=np.int64)
    for split, per_class, batch_label in (
        ("train", n_train_per_class, "training batch 1 of 1"),
        ("test", n_test_per_class, "testing batch 1 of 1"),
    ):
        fine = _balanced_labels(rng, 100 * per_class, 100)
        data = _samples(rng, protos, fine).reshape(len(fine), 3 * 32 * 32)
        obj = {
            "filenames": [
                f"{CIFAR100_FINE_LABEL_NAMES[f]}_s_{i:06d}.png" for i, f in enumerate(fine)
            ],
            "batch_label": batch_label,
            "fine_labels": fine.tolist(),
            "coarse_labels": fine_to_coarse[fine].tolist(),
            "data": data,
        }
        (folder / split).write_bytes(pickle.dumps(obj, protocol=2))
    meta = {
        "fine_label_names": list(CIFAR100_FINE_LABEL_NAMES),
        "coarse_label_names": list(CIFAR100_COARSE_LABEL_NAMES),
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root
