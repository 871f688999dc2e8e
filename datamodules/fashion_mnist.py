"""Fashion-MNIST as an in-memory datamodule (tasks S1 and S2).

The four original IDX files are looked up, in this order, in the user's ``data_dir``
(torchvision layout ``<data_dir>/FashionMNIST/raw/`` or flat, ``.gz`` or uncompressed), in a
system-wide copy (Debian's ``dataset-fashion-mnist`` installs them in
``/usr/share/datasets/fashion-mnist``), and finally fetched by torchvision (md5-checked) if
downloading is allowed. The files are parsed here with numpy rather than through
torchvision so that every source goes through the same validation, and so that the system
copy (whose gzip bytes differ from torchvision's checksums) can be used offline.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt

from datamodules.base import (
    DataFormatError,
    DataNotFoundError,
    InMemoryDataModule,
    RawSplits,
    check_bool,
)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Role -> file name without the optional ``.gz`` suffix.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path, ndim: int) -> tuple[np.ndarray, str]:
    """Parse an unsigned-byte IDX file (gzip-compressed or raw) with ``ndim`` dimensions.

    Returns the array and the md5 of the decompressed bytes (stable across gzip/raw copies,
    unlike the md5 of a ``.gz`` file). Raises DataFormatError naming the file otherwise.
    """
    path = Path(path)
    data = path.read_bytes()
    # Detect compression by content, not by name: a mis-named file should still work.
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataFormatError(f"{path}: corrupt gzip data ({e})") from e
    if len(data) < 4 + 4 * ndim:
        raise DataFormatError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataFormatError(
            f"{path}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    payload = memoryview(data)[4 + 4 * ndim :]
    expected = int(np.prod(dims, dtype=np.int64))
    if len(payload) != expected:
        raise DataFormatError(
            f"{path}: header says dimensions {dims} ({expected} bytes) but the file holds "
            f"{len(payload)} bytes of data"
        )
    array = np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()
    return array, hashlib.md5(data).hexdigest()


def find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The four files in ``directory`` (uncompressed preferred) and the names missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, name in IDX_FILES.items():
        # torchvision keeps both the .gz and the extracted file; the raw one is faster to read.
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{name}[.gz]")
    return found, missing


def load_fashion_mnist_files(
    files: dict[str, Path],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse and validate the four files; returns arrays and md5s keyed by role."""
    arrays: dict[str, np.ndarray] = {}
    md5s: dict[str, str] = {}
    for role, path in files.items():
        arrays[role], md5s[role] = read_idx(path, 3 if role.endswith("images") else 1)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != (28, 28):
            raise DataFormatError(
                f"{files[f'{split}_images']}: images are {images.shape[1]}x{images.shape[2]}, "
                "expected 28x28"
            )
        if len(images) != len(labels):
            raise DataFormatError(
                f"{files[f'{split}_images']} holds {len(images)} images but "
                f"{files[f'{split}_labels']} holds {len(labels)} labels"
            )
        if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataFormatError(
                f"{files[f'{split}_labels']}: label {int(labels.max())} out of range "
                f"0..{len(FASHION_MNIST_CLASSES) - 1}"
            )
    return arrays, md5s


class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST (10 classes, 1x28x28), 60000 train (minus ``val_size``) / 10000 test.

    Args:
        data_dir: directory holding the four IDX files (flat or torchvision layout); also
            the download target. None = not given (downloads then go to ``./data``).
        system_dir: system-wide copy searched after ``data_dir``.
        download: allow torchvision to download when no local copy is found.
        val_size, split_seed, batch_size, eval_batch_size, normalize: see InMemoryDataModule.
    """

    mean = (0.2860,)
    std = (0.3530,)

    def __init__(
        self,
        data_dir: str | None = None,
        system_dir: str = "/usr/share/datasets/fashion-mnist",
        download: bool = True,
        val_size: NonNegativeInt = 10000,
        split_seed: int = 0,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            val_size=val_size,
            split_seed=split_seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            normalize=normalize,
        )
        if data_dir is not None and not isinstance(data_dir, str | Path):
            raise ValueError(f"data_dir={data_dir!r}: must be a directory path or None")
        if not isinstance(system_dir, str | Path):
            raise ValueError(f"system_dir={system_dir!r}: must be a directory path")
        self.data_dir = None if data_dir is None else str(data_dir)
        self.system_dir = str(system_dir)
        self.download = check_bool("download", download)
        self._downloaded_dir: Path | None = None
        self.save_hyperparameters()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    @property
    def class_names(self) -> list[str]:
        return list(FASHION_MNIST_CLASSES)

    @property
    def dataset_name(self) -> str:
        return "fashion-mnist"

    @property
    def download_root(self) -> Path:
        """Where torchvision downloads to (it adds ``FashionMNIST/raw`` below)."""
        return Path(self.data_dir if self.data_dir is not None else "data").expanduser()

    def _candidates(self) -> list[tuple[str, Path]]:
        candidates: list[tuple[str, Path]] = []
        if self.data_dir is not None:
            root = Path(self.data_dir).expanduser()
            candidates += [("explicit", root / "FashionMNIST" / "raw"), ("explicit", root)]
        candidates.append(("system", Path(self.system_dir).expanduser()))
        if self.data_dir is None:
            # A previous run's download into ./data is reused rather than fetched again.
            candidates.append(("download", self.download_root / "FashionMNIST" / "raw"))
        return candidates

    def _resolve(self) -> tuple[str, Path, dict[str, Path]]:
        """Find the files (downloading if allowed): (source, directory, role -> path)."""
        tried: list[str] = []
        for source, directory in self._candidates():
            files, missing = find_idx_files(directory)
            if not missing:
                if self._downloaded_dir is not None and directory == self._downloaded_dir:
                    source = "download"
                return source, directory, files
            reason = "missing " + ", ".join(missing) if directory.is_dir() else "no such directory"
            tried.append(f"{directory} ({reason})")

        if self.download:
            target = self.download_root / "FashionMNIST" / "raw"
            try:
                import torchvision

                # torchvision verifies the md5 of every archive it fetches.
                torchvision.datasets.FashionMNIST(str(self.download_root), download=True)
            except Exception as e:  # network, checksum or disk errors all mean "not available"
                tried.append(
                    f"torchvision download into {target} (failed: {' '.join(str(e).split())})"
                )
            else:
                files, missing = find_idx_files(target)
                if not missing:
                    self._downloaded_dir = target
                    return "download", target, files
                tried.append(f"torchvision download into {target} (missing {', '.join(missing)})")
        else:
            tried.append("torchvision download (not attempted: download=False)")

        raise DataNotFoundError(
            "Fashion-MNIST not found. Tried:\n  - "
            + "\n  - ".join(tried)
            + "\nProvide the data in one of these ways: `apt-get install dataset-fashion-mnist` "
            "(installs the files in /usr/share/datasets/fashion-mnist); or pass "
            "`--data.data_dir DIR` where DIR holds the four files "
            f"({', '.join(n + '.gz' for n in IDX_FILES.values())}), flat or under "
            "DIR/FashionMNIST/raw/; or enable `--data.download true` with internet access."
        )

    def prepare_data(self) -> None:
        # Runs on one process per node before setup(): the only place that may download.
        self._resolve()

    def _load_raw(self) -> RawSplits:
        source, directory, files = self._resolve()
        arrays, md5s = load_fashion_mnist_files(files)
        return RawSplits(
            train_x=torch.from_numpy(arrays["train_images"]).unsqueeze(1),
            train_y=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
            test_x=torch.from_numpy(arrays["test_images"]).unsqueeze(1),
            test_y=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
            source=source,
            source_path=str(directory.resolve()),
            extra={f"md5_{role}": md5 for role, md5 in md5s.items()},
        )
