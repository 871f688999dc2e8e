"""Fashion-MNIST as an in-memory datamodule (tasks S1 and S2).

The four original IDX files are read from the user's ``data_dir`` when one is given
(torchvision layout ``<data_dir>/FashionMNIST/raw/`` or flat, ``.gz`` or uncompressed), and
only from there: a folder that does not hold them is refused, never replaced by another copy.
Without ``data_dir`` they are looked up in a system-wide copy (Debian's
``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``), then in
``./data``, and finally fetched by torchvision (md5-checked) into ``./data`` if downloading
is allowed. The files are parsed here with numpy rather than through
torchvision so that every source goes through the same validation, and so that the system
copy (whose gzip bytes differ from torchvision's checksums) can be used offline.
"""

from __future__ import annotations

import functools
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
    An unchanged file is read once per process: a study's trials all read the same files.
    """
    stat = Path(path).stat()
    array, md5 = _read_idx(str(path), ndim, stat.st_size, stat.st_mtime_ns)
    return array.copy(), md5


@functools.lru_cache(maxsize=8)
def _read_idx(name: str, ndim: int, size: int, mtime_ns: int) -> tuple[np.ndarray, str]:
    path = Path(name)
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


@functools.cache
def _idx_dims(path: str, size: int, mtime_ns: int, ndim: int) -> tuple[int, ...]:
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(4 + 4 * ndim)
    except (OSError, EOFError) as e:
        raise DataFormatError(f"{path}: corrupt gzip data ({e})") from e
    if len(header) < 4 + 4 * ndim:
        raise DataFormatError(f"{path}: too short for an IDX header ({len(header)} bytes)")
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = int.from_bytes(header[:4], "big")
    if magic != expected_magic:
        raise DataFormatError(
            f"{path}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if not compressed and size != 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64)):
        raise DataFormatError(
            f"{path}: header says dimensions {dims} but the file holds {size} bytes"
        )
    return dims


def idx_dims(path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions in an IDX file's header (and its size checked where uncompressed),
    without reading the data; cached per process by path, size and modification time."""
    stat = path.stat()
    return _idx_dims(str(path), stat.st_size, stat.st_mtime_ns, ndim)


def check_fashion_mnist_headers(files: dict[str, Path]) -> int:
    """The four files' headers agree (28x28 images, one label per image); the train count."""
    dims = {
        role: idx_dims(path, 3 if role.endswith("images") else 1) for role, path in files.items()
    }
    for split in ("train", "test"):
        images, labels = dims[f"{split}_images"], dims[f"{split}_labels"]
        if images[1:] != (28, 28):
            raise DataFormatError(
                f"{files[f'{split}_images']}: images are {images[1]}x{images[2]}, expected 28x28"
            )
        if images[0] != labels[0]:
            raise DataFormatError(
                f"{files[f'{split}_images']} holds {images[0]} images but "
                f"{files[f'{split}_labels']} holds {labels[0]} labels"
            )
    return dims["train_images"][0]


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
        data_dir: directory holding the four IDX files (flat or torchvision layout), used
            alone. None = not given: the system copy, then ``./data`` (the download target).
        system_dir: system-wide copy searched when no ``data_dir`` is given.
        download: allow torchvision to download into ``./data`` when no copy is found.
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
        if self.data_dir is not None:  # the user's folder, and only it
            root = Path(self.data_dir).expanduser()
            return [("explicit", root / "FashionMNIST" / "raw"), ("explicit", root)]
        # A previous run's download into ./data is reused rather than fetched again.
        return [
            ("system", Path(self.system_dir).expanduser()),
            ("download", self.download_root / "FashionMNIST" / "raw"),
        ]

    def _find(self) -> tuple[tuple[str, Path, dict[str, Path]] | None, list[str]]:
        """The first candidate folder holding the four files, and what was tried."""
        tried: list[str] = []
        for source, directory in self._candidates():
            files, missing = find_idx_files(directory)
            if not missing:
                if self._downloaded_dir is not None and directory == self._downloaded_dir:
                    source = "download"
                return (source, directory, files), tried
            reason = "missing " + ", ".join(missing) if directory.is_dir() else "no such directory"
            tried.append(f"{directory} ({reason})")
        return None, tried

    def _not_found(self, tried: list[str]) -> DataNotFoundError:
        files = ", ".join(n + ".gz" for n in IDX_FILES.values())
        if self.data_dir is not None:
            root = Path(self.data_dir).expanduser()
            what = "no such folder" if not root.is_dir() else "it does not hold Fashion-MNIST"
            return DataNotFoundError(
                f"--data.data_dir {self.data_dir}: {what} (tried {'; '.join(tried)}). An "
                "explicit data_dir is used alone, never replaced by another copy: point it at "
                f"the folder that holds the four files ({files}, flat or under "
                "FashionMNIST/raw/), or leave it out to use the system copy or a download."
            )
        return DataNotFoundError(
            "Fashion-MNIST not found. Tried:\n  - "
            + "\n  - ".join(tried)
            + "\nProvide the data in one of these ways: `apt-get install dataset-fashion-mnist` "
            "(installs the files in /usr/share/datasets/fashion-mnist); or pass "
            f"`--data.data_dir DIR` where DIR holds the four files ({files}), flat or under "
            "DIR/FashionMNIST/raw/; or enable `--data.download true` with internet access."
        )

    def check_files(self) -> str:
        """Where the data is (or that it will be downloaded), from the files' headers only,
        downloading nothing; DataNotFoundError / DataFormatError naming the file otherwise."""
        found, tried = self._find()
        if found is None:
            if self.download and self.data_dir is None:
                return f"Fashion-MNIST will be downloaded into {self.download_root}"
            if self.data_dir is None:
                tried.append("torchvision download (not attempted: download=False)")
            raise self._not_found(tried)
        source, directory, files = found
        n_train = check_fashion_mnist_headers(files)
        if self.val_size >= n_train:
            raise ValueError(
                f"val_size={self.val_size}: must be smaller than the number of training "
                f"samples ({n_train}) of {self.dataset_name}"
            )
        return f"Fashion-MNIST ({source}) in {directory}"

    def _resolve(self) -> tuple[str, Path, dict[str, Path]]:
        """Find the files (downloading if allowed): (source, directory, role -> path)."""
        found, tried = self._find()
        if found is not None:
            return found
        if self.data_dir is None and self.download:
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
        elif self.data_dir is None:
            tried.append("torchvision download (not attempted: download=False)")
        raise self._not_found(tried)

    def prepare_data(self) -> None:
        # Runs on one process per node before setup(): the only place that may download.
        self._resolve()

    def _splits_key(self) -> tuple:
        source, directory, files = self._resolve()
        stats = [
            (role, str(path), path.stat().st_size, path.stat().st_mtime_ns)
            for role, path in sorted(files.items())
        ]
        return (
            type(self),
            source,
            str(directory),
            *stats,
            self.val_size,
            self.split_seed,
            self.normalize,
            tuple(self.mean),
            tuple(self.std),
        )

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
