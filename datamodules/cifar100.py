"""CIFAR-100 restricted to one superclass (task S0), as an in-memory datamodule.

torchvision's ``CIFAR100`` dataset only exposes the fine labels, so it is used solely to
download and md5-verify the archive; the ``cifar-100-python/{train,test,meta}`` pickles are
then read here, rows are selected by their real ``coarse_labels`` and the fine labels of the
superclass are remapped to ``0..k-1`` (ascending fine index, i.e. alphabetical order).

The pickles are read with a restricted unpickler that only rebuilds numpy arrays and plain
containers, so a local copy of unknown origin cannot execute code when loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import pickle
import re
import shutil
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
from datamodules.tensor_loader import BatchTransform

#: The 20 coarse labels, in label order, spelled as in the ``meta`` file.
CIFAR100_COARSE_LABEL_NAMES: tuple[str, ...] = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

#: Fine classes of each superclass (the real CIFAR-100 membership).
CIFAR100_SUPERCLASS_MEMBERS: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

#: The 100 fine labels in label order: the meta file lists them alphabetically.
CIFAR100_FINE_LABEL_NAMES: tuple[str, ...] = tuple(
    sorted(name for members in CIFAR100_SUPERCLASS_MEMBERS.values() for name in members)
)

#: Fine label index -> coarse label index.
CIFAR100_FINE_TO_COARSE: tuple[int, ...] = tuple(
    next(
        CIFAR100_COARSE_LABEL_NAMES.index(coarse)
        for coarse, members in CIFAR100_SUPERCLASS_MEMBERS.items()
        if fine in members
    )
    for fine in CIFAR100_FINE_LABEL_NAMES
)

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_HOST = "www.cs.toronto.edu"
CIFAR100_URL = f"https://{CIFAR100_HOST}/~kriz/{CIFAR100_ARCHIVE}"
#: Seconds any one network wait of the download may take (connect, or one read).
DOWNLOAD_TIMEOUT = 30.0


def _shown(path: Path) -> str:
    """`path` as given, with its absolute form when that differs (relative to the cwd)."""
    absolute = path.resolve()
    return str(path) if str(path) == str(absolute) else f"{path} (= {absolute})"


def how_to_supply(download: bool = True) -> list[str]:
    """What a user can do when CIFAR-100 is not found: the lines of the run's own error
    message, also shown by the report's S0 boxes (one copy of the words)."""
    if download:
        fetch = f"or run where {CIFAR100_HOST} is reachable, so the download can succeed."
    else:
        fetch = (
            f"or allow the download with `--data.download true`, where {CIFAR100_HOST} "
            "is reachable."
        )
    return [
        f"put the folder {CIFAR100_FOLDER}/ (its files {', '.join(CIFAR100_FILES)}; extract "
        f"{CIFAR100_URL}) into a folder PATH and pass `--data.data_dir PATH`;",
        fetch,
    ]


def resolve_superclass(name: str) -> str:
    """Canonical superclass name: any case, and `-`, `_`, space or no separator alike
    (`Large man-made outdoor things`, `vehicles1` -> `vehicles_1`)."""
    squashed = re.sub(r"[-_ ]", "", str(name).lower())
    for canonical in CIFAR100_COARSE_LABEL_NAMES:
        if re.sub(r"[-_ ]", "", canonical) == squashed:
            return canonical
    close = difflib.get_close_matches(str(name).lower(), CIFAR100_COARSE_LABEL_NAMES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(
        f"superclass={name!r}: not a CIFAR-100 superclass{hint}; valid names: "
        f"{', '.join(CIFAR100_COARSE_LABEL_NAMES)}"
    )


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and builtins, and nothing else."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            # Protocol-2 pickles written by Python 3 encode bytes through _codecs.encode.
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not array data)")


def load_cifar_pickle(path: Path) -> tuple[dict, str]:
    """Load one CIFAR pickle safely; returns the dict and the md5 of the file."""
    raw = path.read_bytes()
    try:
        # latin1: the original files were written by Python 2.
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:
        raise DataFormatError(f"{path}: not a readable CIFAR-100 pickle ({e})") from e
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict, found {type(obj).__name__}")
    # Some re-exports carry bytes keys; normalise so lookups by name work.
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj, hashlib.md5(raw).hexdigest()


def _check_meta(meta: dict, path: Path) -> None:
    for key, expected in (
        ("fine_label_names", CIFAR100_FINE_LABEL_NAMES),
        ("coarse_label_names", CIFAR100_COARSE_LABEL_NAMES),
    ):
        if key not in meta:
            raise DataFormatError(f"{path}: missing key {key!r}")
        names = tuple(str(n) for n in meta[key])
        if names != expected:
            if len(names) != len(expected):
                what = f"{len(names)} names, expected {len(expected)}"
            else:
                i = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
                what = f"entry {i} is {names[i]!r}, expected {expected[i]!r}"
            raise DataFormatError(f"{path}: {key} do not match CIFAR-100 ({what})")


def _check_split(
    split: dict, path: Path, require_superclass: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a train/test dict; returns data (N, 3072) uint8, fine and coarse labels."""
    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in split:
            raise DataFormatError(f"{path}: missing key {key!r} (found {sorted(split)})")
    data = np.asarray(split["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataFormatError(
            f"{path}: 'data' is {data.dtype} with shape {data.shape}, expected uint8 (N, 3072)"
        )
    fine = np.asarray(split["fine_labels"], dtype=np.int64).reshape(-1)
    coarse = np.asarray(split["coarse_labels"], dtype=np.int64).reshape(-1)
    if not len(fine) == len(coarse) == len(data):
        raise DataFormatError(
            f"{path}: {len(data)} images, {len(fine)} fine labels, {len(coarse)} coarse labels"
        )
    if len(fine) and (fine.min() < 0 or fine.max() >= len(CIFAR100_FINE_LABEL_NAMES)):
        raise DataFormatError(f"{path}: fine labels outside 0..99 ({fine.min()}..{fine.max()})")
    if len(coarse) and (coarse.min() < 0 or coarse.max() >= len(CIFAR100_COARSE_LABEL_NAMES)):
        raise DataFormatError(
            f"{path}: coarse labels outside 0..19 ({coarse.min()}..{coarse.max()})"
        )
    expected_coarse = np.asarray(CIFAR100_FINE_TO_COARSE, dtype=np.int64)[fine]
    bad = np.flatnonzero(expected_coarse != coarse)
    if len(bad):
        i = int(bad[0])
        raise DataFormatError(
            f"{path}: {len(bad)} rows have a coarse label inconsistent with the meta, e.g. row "
            f"{i}: fine {fine[i]} ({CIFAR100_FINE_LABEL_NAMES[fine[i]]}) with coarse "
            f"{coarse[i]}, expected {expected_coarse[i]} "
            f"({CIFAR100_COARSE_LABEL_NAMES[expected_coarse[i]]})"
        )
    if not np.any(coarse == require_superclass):
        raise DataFormatError(
            f"{path}: no rows of superclass {require_superclass} "
            f"({CIFAR100_COARSE_LABEL_NAMES[require_superclass]})"
        )
    return data, fine, coarse


class BatchRandomCropFlip:
    """Batched ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` on (B, C, H, W).

    One gather per batch: per-sample crop offsets and flips are folded into the row/column
    indices. ``fill`` is the per-channel value of the padding (pixel 0 after normalization,
    to match torchvision's padding of the unnormalized image).
    """

    def __init__(self, padding: int = 4, fill: tuple[float, ...] = (0.0,)) -> None:
        self.padding = padding
        self.fill = tuple(fill)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        fill = torch.tensor(self.fill, dtype=x.dtype).expand(c).view(1, c, 1, 1)
        padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        flip = torch.rand(b, generator=generator) < 0.5
        rows = oy[:, None] + torch.arange(h)
        col_offsets = torch.where(flip[:, None], torch.arange(w - 1, -1, -1), torch.arange(w))
        cols = ox[:, None] + col_offsets
        return padded[
            torch.arange(b)[:, None, None, None],
            torch.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]


class CIFAR100SuperclassDataModule(InMemoryDataModule):
    """The fine classes of one CIFAR-100 superclass (3x32x32; 2500 train / 500 test).

    Args:
        data_dir: directory that holds (or will receive) ``cifar-100-python/``.
        superclass: coarse class name, underscored as in the meta file or with spaces.
        download: let torchvision download (md5-verified) when no local copy exists.
        augment: random crop (pad 4) + horizontal flip on training batches.
        val_size, split_seed, batch_size, eval_batch_size, normalize: see InMemoryDataModule.
    """

    mean = CIFAR100_MEAN
    std = CIFAR100_STD

    def __init__(
        self,
        data_dir: str = "data",
        superclass: str = "large_man-made_outdoor_things",
        download: bool = True,
        val_size: NonNegativeInt = 500,
        split_seed: int = 0,
        batch_size: PositiveInt = 100,
        eval_batch_size: PositiveInt = 500,
        augment: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            val_size=val_size,
            split_seed=split_seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            normalize=normalize,
        )
        if not isinstance(data_dir, str | Path):
            raise ValueError(f"data_dir={data_dir!r}: must be a directory path")
        self.data_dir = str(data_dir)
        self.superclass = resolve_superclass(superclass)
        self.download = check_bool("download", download)
        self.augment = check_bool("augment", augment)
        self._downloaded = False
        self.save_hyperparameters()

    @property
    def coarse_label(self) -> int:
        return CIFAR100_COARSE_LABEL_NAMES.index(self.superclass)

    @property
    def fine_labels(self) -> list[int]:
        """Original fine label indices of the superclass, ascending (position = new label)."""
        return sorted(
            CIFAR100_FINE_LABEL_NAMES.index(n) for n in CIFAR100_SUPERCLASS_MEMBERS[self.superclass]
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    @property
    def class_names(self) -> list[str]:
        return [CIFAR100_FINE_LABEL_NAMES[i] for i in self.fine_labels]

    @property
    def dataset_name(self) -> str:
        return f"cifar100-{self.superclass}"

    @property
    def folder(self) -> Path:
        return Path(self.data_dir).expanduser() / CIFAR100_FOLDER

    def _resolve(self) -> tuple[str, Path]:
        folder = self.folder
        missing = [f for f in CIFAR100_FILES if not (folder / f).is_file()]
        if not missing:
            return ("download" if self._downloaded else "explicit"), folder
        reason = f"missing {', '.join(missing)}" if folder.is_dir() else "no such directory"
        tried = [f"{_shown(folder)}: {reason}"]
        if self.download:
            failure = self._download()
            if failure is None:
                self._downloaded = True
                return "download", folder
            tried.append(
                f"torchvision download of {CIFAR100_URL} into {_shown(Path(self.data_dir))}: "
                f"failed ({failure}); nothing was kept"
            )
        else:
            tried.append("torchvision download: not attempted (--data.download false)")
        raise DataNotFoundError(
            "CIFAR-100 not found. Tried:\n  - "
            + "\n  - ".join(tried)
            + "\nWhat you can do:\n  - "
            + "\n  - ".join(how_to_supply(self.download))
        )

    def check_files(self) -> str:
        """Where the data is (or that it will be downloaded), from the files' presence and
        sizes only, downloading nothing; DataNotFoundError otherwise. A data_dir other than
        the default that does not exist is refused (a mistyped path), never created."""
        folder = self.folder
        missing = [f for f in CIFAR100_FILES if not (folder / f).is_file()]
        empty = [f for f in CIFAR100_FILES if f not in missing and not (folder / f).stat().st_size]
        if empty:
            raise DataNotFoundError(f"{_shown(folder)}: empty file(s) {', '.join(empty)}")
        if not missing:
            return f"CIFAR-100 in {_shown(folder)}"
        root = Path(self.data_dir).expanduser()
        if self.download and (root.is_dir() or self.data_dir == "data"):
            return f"CIFAR-100 will be downloaded into {_shown(root)}"
        if not root.is_dir():
            raise DataNotFoundError(
                f"--data.data_dir {self.data_dir}: no such folder (CIFAR-100's "
                f"{CIFAR100_FOLDER}/ is looked for there, and downloaded there when allowed)"
            )
        raise DataNotFoundError(
            f"CIFAR-100 not found: {_shown(folder)} misses {', '.join(missing)} and the "
            "download is off (--data.download false). Put the folder "
            f"{CIFAR100_FOLDER}/ into --data.data_dir PATH, or allow the download with "
            "`--data.download true`."
        )

    def _download(self) -> str | None:
        """Let torchvision fetch and extract the archive; why it failed, or None.

        A failed download leaves nothing behind: the archive, the extracted folder and the
        folders that torchvision created for them are removed when they did not exist
        before. Each network wait is bounded by DOWNLOAD_TIMEOUT seconds (urllib has no
        timeout of its own, so a host that drops packets would otherwise hang the run).
        """
        import socket

        import torchvision

        root = Path(self.data_dir).expanduser()
        created = [d for d in (root, *root.parents) if not d.exists()]
        leftovers = [p for p in (root / CIFAR100_ARCHIVE, self.folder) if not p.exists()]
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
        try:
            # Checks the archive's md5 and extracts it into data_dir/cifar-100-python.
            torchvision.datasets.CIFAR100(str(root), train=True, download=True)
        except Exception as e:  # network, checksum or disk errors all mean "not available"
            for path in leftovers:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink(missing_ok=True)
            for directory in created:  # deepest first; only if nothing else was put there
                with contextlib.suppress(OSError):
                    directory.rmdir()
            return " ".join(str(e).split()) or type(e).__name__
        finally:
            socket.setdefaulttimeout(previous)
        return None

    def prepare_data(self) -> None:
        # Runs on one process per node before setup(): the only place that may download.
        self._resolve()

    def _load_raw(self) -> RawSplits:
        source, folder = self._resolve()
        meta, md5_meta = load_cifar_pickle(folder / "meta")
        _check_meta(meta, folder / "meta")
        remap = np.full(len(CIFAR100_FINE_LABEL_NAMES), -1, dtype=np.int64)
        remap[self.fine_labels] = np.arange(len(self.fine_labels))
        out: dict[str, torch.Tensor] = {}
        md5s = {"md5_meta": md5_meta}
        for split in ("train", "test"):
            path = folder / split
            obj, md5s[f"md5_{split}"] = load_cifar_pickle(path)
            data, fine, coarse = _check_split(obj, path, self.coarse_label)
            rows = coarse == self.coarse_label
            out[f"{split}_x"] = torch.from_numpy(data[rows].reshape(-1, 3, 32, 32).copy())
            out[f"{split}_y"] = torch.from_numpy(remap[fine[rows]])
        import torchvision

        # Record whether these are the exact files torchvision publishes checksums for.
        tv = torchvision.datasets.CIFAR100
        official = dict(tv.train_list + tv.test_list) | {"meta": tv.meta["md5"]}
        matches = all(md5s[f"md5_{name}"] == md5 for name, md5 in official.items())
        return RawSplits(
            train_x=out["train_x"],
            train_y=out["train_y"],
            test_x=out["test_x"],
            test_y=out["test_y"],
            source=source,
            source_path=str(folder.resolve()),
            extra={
                "superclass": self.superclass,
                "coarse_label": self.coarse_label,
                "fine_labels": ",".join(map(str, self.fine_labels)),
                **md5s,
                "torchvision_md5_match": "yes" if matches else "no",
            },
        )

    def _train_transform(self) -> BatchTransform | None:
        if not self.augment:
            return None
        if self.normalize:
            fill = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        else:
            fill = (0.0, 0.0, 0.0)
        return BatchRandomCropFlip(padding=4, fill=fill)
