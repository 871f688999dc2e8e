"""Tests for the in-memory datamodules, their batch loader and the synthetic data writers.

The datasets are generated in the real on-disk formats (gzip IDX, ``cifar-100-python``
pickles) so loading goes through the same code as the real data. The test marked ``slow``
loads the real Fashion-MNIST installed by the Debian package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import gzip
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import (
    CIFAR100SuperclassDataModule,
    DataFormatError,
    DataNotFoundError,
    FashionMNISTDataModule,
    InMemoryDataModule,
    TensorBatchLoader,
)
from datamodules.cifar100 import (
    CIFAR100_COARSE_LABEL_NAMES,
    CIFAR100_FINE_LABEL_NAMES,
    CIFAR100_FINE_TO_COARSE,
    BatchRandomCropFlip,
)
from datamodules.fashion_mnist import IDX_FILES
from datamodules.synthetic import write_cifar100, write_fashion_mnist, write_idx
from tests.helpers import RunIf
from tests.helpers.run_if import FASHION_MNIST_FILES, SYSTEM_FASHION_MNIST


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.fixture
def fmnist_root(tmp_path: Path) -> Path:
    return write_fashion_mnist(tmp_path / "fmnist", n_train=600, n_test=200, seed=0)


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return write_cifar100(tmp_path / "cifar", n_train_per_class=12, n_test_per_class=4, seed=0)


def fmnist(root: Path, empty_dir: Path, **kwargs) -> FashionMNISTDataModule:
    # system_dir points at an empty dir so the test never silently uses the real system copy.
    kwargs = {"val_size": 100, "download": False, "system_dir": str(empty_dir), **kwargs}
    return FashionMNISTDataModule(data_dir=str(root), **kwargs)


def cifar(root: Path, **kwargs) -> CIFAR100SuperclassDataModule:
    kwargs = {"val_size": 10, "download": False, **kwargs}
    return CIFAR100SuperclassDataModule(data_dir=str(root), **kwargs)


# --- Fashion-MNIST ----------------------------------------------------------------------


def test_fashion_mnist_splits_shapes_dtypes(fmnist_root: Path, empty_dir: Path) -> None:
    dm = fmnist(fmnist_root, empty_dir)
    assert dm.input_shape == (1, 28, 28)
    assert dm.num_classes == 10
    assert dm.class_names[0] == "T-shirt/top" and dm.class_names[-1] == "Ankle boot"
    assert dm.dataset_name == "fashion-mnist"
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (500, 100, 200)
    for x, y in ((dm.train_x, dm.train_y), (dm.val_x, dm.val_y), (dm.test_x, dm.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 28, 28) and len(y) == len(x)
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    # All ten classes occur in the training part.
    assert set(dm.train_y.tolist()) == set(range(10))
    lineage = dm.lineage
    assert lineage["source"] == "explicit"
    assert lineage["source_path"] == str((fmnist_root / "FashionMNIST" / "raw").resolve())
    assert (lineage["train_size"], lineage["val_size"], lineage["test_size"]) == (500, 100, 200)
    assert lineage["split_seed"] == 0


def test_fashion_mnist_normalization(fmnist_root: Path, empty_dir: Path) -> None:
    raw = fmnist(fmnist_root, empty_dir, normalize=False)
    raw.setup()
    assert float(raw.train_x.min()) >= 0.0 and float(raw.train_x.max()) <= 1.0
    norm = fmnist(fmnist_root, empty_dir, normalize=True)
    norm.setup()
    expected = (raw.train_x - 0.2860) / 0.3530
    torch.testing.assert_close(norm.train_x, expected)


def test_split_deterministic_for_seed(fmnist_root: Path, empty_dir: Path) -> None:
    a, b, c = (fmnist(fmnist_root, empty_dir, split_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    assert torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_x, c.val_x)
    # Train and validation partition the original training set: no sample in both.
    flat_train = {tuple(row.tolist()) for row in a.train_x.flatten(1)[:, :40]}
    assert not any(tuple(row.tolist()) in flat_train for row in a.val_x.flatten(1)[:, :40])


def test_setup_is_idempotent(fmnist_root: Path, empty_dir: Path) -> None:
    dm = fmnist(fmnist_root, empty_dir)
    dm.setup("fit")
    train_x = dm.train_x
    dm.setup("test")
    assert dm.train_x is train_x


def test_splits_made_once_per_process_are_copies_and_follow_the_files(
    tmp_path: Path, empty_dir: Path
) -> None:
    from datamodules.synthetic import write_fashion_mnist

    root = write_fashion_mnist(tmp_path / "f", n_train=120, n_test=40)
    a, b = fmnist(root, empty_dir, val_size=20), fmnist(root, empty_dir, val_size=20)
    a.setup()
    a.train_x.zero_()  # what one run does to its tensors never reaches the next
    a.test_y.fill_(3)
    b.setup()
    assert b.train_x.abs().sum() > 0 and not torch.equal(b.test_y, a.test_y)
    assert b.lineage == a.lineage and b.data_summary == a.data_summary
    other = fmnist(root, empty_dir, val_size=30)  # other settings: other splits
    other.setup()
    assert (len(other.train_x), other.lineage["val_size"]) == (90, 30)
    # New files (another size) in the same folder: read again, not the cached splits.
    write_fashion_mnist(tmp_path / "f", n_train=150, n_test=40)
    again = fmnist(root, empty_dir, val_size=20)
    again.setup()
    assert (len(again.train_x), again.lineage["train_size"]) == (130, 130)


def test_lineage_requires_setup(fmnist_root: Path, empty_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="setup"):
        _ = fmnist(fmnist_root, empty_dir).lineage


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_flat_layout(tmp_path: Path, empty_dir: Path, compress: bool) -> None:
    generated = write_fashion_mnist(tmp_path / "gen", n_train=100, n_test=50)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in IDX_FILES.values():
        data = (generated / "FashionMNIST" / "raw" / f"{name}.gz").read_bytes()
        if compress:
            (flat / f"{name}.gz").write_bytes(data)
        else:
            (flat / name).write_bytes(gzip.decompress(data))
    dm = fmnist(flat, empty_dir, val_size=20)
    dm.setup()
    assert dm.lineage["source_path"] == str(flat.resolve())
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (80, 20, 50)


def test_fashion_mnist_explicit_data_dir_is_never_replaced_by_the_system_copy(
    tmp_path: Path, fmnist_root: Path, empty_dir: Path
) -> None:
    # data_dir holds nothing, the "system" directory holds the flat files: refused, naming
    # the folder, rather than trained on the other copy without a word.
    system = tmp_path / "system"
    shutil.copytree(fmnist_root / "FashionMNIST" / "raw", system)
    dm = FashionMNISTDataModule(
        data_dir=str(empty_dir), system_dir=str(system), download=False, val_size=100
    )
    for step in (dm.check_files, dm.setup):
        with pytest.raises(DataNotFoundError, match="it does not hold Fashion-MNIST") as info:
            step()
        assert f"--data.data_dir {empty_dir}:" in str(info.value)
        assert str(system) not in str(info.value)
    # Without data_dir, the system copy is used.
    dm = FashionMNISTDataModule(system_dir=str(system), download=False, val_size=100)
    assert dm.check_files() == f"Fashion-MNIST (system) in {system}"


def test_fashion_mnist_missing_data_offline(tmp_path: Path, empty_dir: Path) -> None:
    data_dir = tmp_path / "nothing_here"
    data_dir.mkdir()
    dm = FashionMNISTDataModule(
        data_dir=str(data_dir), system_dir=str(empty_dir), download=False, val_size=10
    )
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert str(data_dir / "FashionMNIST" / "raw") in message
    assert f"--data.data_dir {data_dir}: it does not hold Fashion-MNIST" in message
    assert isinstance(info.value, FileNotFoundError)
    # Without data_dir: every place tried is named, and how to provide the data.
    dm = FashionMNISTDataModule(system_dir=str(empty_dir), download=False, val_size=10)
    with pytest.raises(DataNotFoundError) as info:
        dm.check_files()
    message = str(info.value)
    assert str(empty_dir) in message and "download=False" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data.data_dir" in message


def test_fashion_mnist_check_reads_headers_only(fmnist_root: Path, tmp_path: Path) -> None:
    # A file whose header is fine but whose data is cut short: the check (headers and
    # sizes) of an uncompressed file finds it without reading the images.
    flat = tmp_path / "flat"
    shutil.copytree(fmnist_root / "FashionMNIST" / "raw", flat)
    image = next(flat.glob("train-images-idx3-ubyte*"))
    raw = flat / "train-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress(image.read_bytes())[:-5])
    image.unlink()
    dm = FashionMNISTDataModule(data_dir=str(flat), download=False, val_size=10)
    with pytest.raises(DataFormatError, match="header says dimensions"):
        dm.check_files()


def test_fashion_mnist_wrong_image_size(tmp_path: Path, empty_dir: Path) -> None:
    root = write_fashion_mnist(tmp_path / "bad", n_train=60, n_test=20)
    raw = root / "FashionMNIST" / "raw"
    bad_file = raw / f"{IDX_FILES['train_images']}.gz"
    write_idx(bad_file, np.zeros((60, 32, 32), dtype=np.uint8))
    with pytest.raises(DataFormatError, match="32x32, expected 28x28") as info:
        fmnist(root, empty_dir, val_size=10).setup()
    assert str(bad_file) in str(info.value)


def test_fashion_mnist_bad_magic_and_counts(tmp_path: Path, empty_dir: Path) -> None:
    root = write_fashion_mnist(tmp_path / "bad", n_train=60, n_test=20)
    raw = root / "FashionMNIST" / "raw"
    labels = raw / f"{IDX_FILES['test_labels']}.gz"
    # A label file written with image dimensionality has the wrong magic number.
    write_idx(labels, np.zeros((20, 1, 1), dtype=np.uint8))
    with pytest.raises(DataFormatError, match="magic") as info:
        fmnist(root, empty_dir, val_size=10).setup()
    assert str(labels) in str(info.value)
    write_idx(labels, np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataFormatError, match=r"20 images but .* 19 labels"):
        fmnist(root, empty_dir, val_size=10).setup()
    write_idx(labels, np.full(20, 10, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="label 10 out of range"):
        fmnist(root, empty_dir, val_size=10).setup()


def test_fashion_mnist_truncated_file(tmp_path: Path, empty_dir: Path) -> None:
    root = write_fashion_mnist(tmp_path / "bad", n_train=60, n_test=20)
    path = root / "FashionMNIST" / "raw" / f"{IDX_FILES['train_images']}.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(DataFormatError, match="bytes") as info:
        fmnist(root, empty_dir, val_size=10).setup()
    assert str(path) in str(info.value)


# --- argument validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0: must be a positive integer"),
        ({"eval_batch_size": -5}, "eval_batch_size=-5: must be a positive integer"),
        ({"batch_size": True}, "batch_size=True: must be a positive integer"),
        ({"val_size": -1}, "val_size=-1: must be a non-negative integer"),
        ({"download": "yes"}, "download='yes': must be true or false"),
    ],
)
def test_constructor_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FashionMNISTDataModule(**kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        CIFAR100SuperclassDataModule(**kwargs)


def test_val_size_too_large(fmnist_root: Path, empty_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"val_size=600: .*training samples \(600\)"):
        fmnist(fmnist_root, empty_dir, val_size=600).setup()


def test_val_size_zero_has_no_val_loader(fmnist_root: Path, empty_dir: Path) -> None:
    dm = fmnist(fmnist_root, empty_dir, val_size=0)
    dm.setup()
    assert len(dm.train_x) == 600 and len(dm.val_x) == 0
    assert dm.val_dataloader() == []


def test_loaders_from_datamodule(fmnist_root: Path, empty_dir: Path) -> None:
    dm = fmnist(fmnist_root, empty_dir, batch_size=64, eval_batch_size=30)
    dm.setup()
    train, val, test = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()
    assert isinstance(train, TensorBatchLoader) and train.shuffle
    assert len(train) == 8 and len(val) == 4 and len(test) == 7
    xb, yb = next(iter(train))
    assert xb.shape == (64, 1, 28, 28) and yb.shape == (64,)
    assert not val.shuffle and not test.shuffle
    assert torch.equal(torch.cat([y for _, y in test]), dm.test_y)


def test_datamodule_shards_for_trainer(fmnist_root: Path, empty_dir: Path) -> None:
    class FakeTrainer:
        world_size = 2

        def __init__(self, rank: int) -> None:
            self.global_rank = rank

    seen = []
    for rank in (0, 1):
        dm = fmnist(fmnist_root, empty_dir, batch_size=50)
        dm.trainer = FakeTrainer(rank)  # type: ignore[assignment]
        loader = dm.train_dataloader()
        assert (loader.num_replicas, loader.rank) == (2, rank)
        seen.append(torch.cat([x.flatten(1) for x, _ in loader]))
    assert len(seen[0]) == len(seen[1]) == 250
    # Disjoint halves of the 500 training images, together all of them.
    both = torch.cat(seen)
    assert len(torch.unique(both, dim=0)) == 500


# --- CIFAR-100 superclass -------------------------------------------------------------


def test_cifar_constants_are_the_real_ones() -> None:
    assert len(CIFAR100_FINE_LABEL_NAMES) == 100 and len(CIFAR100_COARSE_LABEL_NAMES) == 20
    assert CIFAR100_FINE_LABEL_NAMES[:3] == ("apple", "aquarium_fish", "baby")
    assert CIFAR100_FINE_LABEL_NAMES[-1] == "worm"
    # Published indices of superclass 9 (large man-made outdoor things).
    members = [i for i, c in enumerate(CIFAR100_FINE_TO_COARSE) if c == 9]
    assert members == [12, 17, 37, 68, 76]
    assert CIFAR100_COARSE_LABEL_NAMES[9] == "large_man-made_outdoor_things"
    assert all(CIFAR100_FINE_TO_COARSE.count(c) == 5 for c in range(20))


def test_cifar_default_superclass(cifar_root: Path) -> None:
    dm = cifar(cifar_root)
    # Available before any data is loaded.
    assert dm.class_names == ["bridge", "castle", "house", "road", "skyscraper"]
    assert dm.num_classes == 5 and dm.input_shape == (3, 32, 32)
    assert dm.dataset_name == "cifar100-large_man-made_outdoor_things"
    dm.setup()
    # 12 train images per fine class x 5 classes, 10 of them for validation; 4 x 5 test.
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (50, 10, 20)
    for x, y in ((dm.train_x, dm.train_y), (dm.val_x, dm.val_y), (dm.test_x, dm.test_y)):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        assert y.dtype == torch.int64
    assert sorted(set(torch.cat([dm.train_y, dm.val_y]).tolist())) == [0, 1, 2, 3, 4]
    assert torch.bincount(dm.test_y).tolist() == [4, 4, 4, 4, 4]
    assert dm.lineage["source"] == "explicit"
    assert dm.lineage["coarse_label"] == 9
    assert dm.lineage["torchvision_md5_match"] == "no"


def test_cifar_selects_real_rows_and_remaps(cifar_root: Path) -> None:
    # Compare with the pickle directly: test rows of coarse label 9, in file order.
    with open(cifar_root / "cifar-100-python" / "test", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    fine = np.asarray(test["fine_labels"])
    rows = np.asarray(test["coarse_labels"]) == 9
    expected_y = np.searchsorted([12, 17, 37, 68, 76], fine[rows])
    dm = cifar(cifar_root, normalize=False)
    dm.setup()
    assert dm.test_y.tolist() == expected_y.tolist()
    expected_x = torch.from_numpy(test["data"][rows].reshape(-1, 3, 32, 32)).float() / 255
    torch.testing.assert_close(dm.test_x, expected_x)


def test_cifar_other_superclass_with_spaces(cifar_root: Path) -> None:
    dm = cifar(cifar_root, superclass="large natural outdoor scenes")
    assert dm.superclass == "large_natural_outdoor_scenes"
    assert dm.class_names == ["cloud", "forest", "mountain", "plain", "sea"]
    assert dm.dataset_name == "cifar100-large_natural_outdoor_scenes"
    dm.setup()
    assert dm.lineage["coarse_label"] == 10
    assert sorted(set(dm.test_y.tolist())) == [0, 1, 2, 3, 4]


def test_cifar_unknown_superclass_lists_names() -> None:
    with pytest.raises(ValueError, match="superclass='spaceships'") as info:
        CIFAR100SuperclassDataModule(superclass="spaceships")
    for name in CIFAR100_COARSE_LABEL_NAMES:
        assert name in str(info.value)


def test_cifar_missing_data_offline(tmp_path: Path) -> None:
    dm = CIFAR100SuperclassDataModule(data_dir=str(tmp_path), download=False, val_size=5)
    with pytest.raises(DataNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert "not attempted (--data.download false)" in message and "--data.data_dir" in message


def test_cifar_wrong_shape(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path, n_train_per_class=2, n_test_per_class=1)
    path = root / "cifar-100-python" / "train"
    with open(path, "rb") as f:
        obj = pickle.load(f)
    obj["data"] = obj["data"][:, :1024]
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataFormatError, match=r"expected uint8 \(N, 3072\)") as info:
        cifar(root, val_size=2).setup()
    assert str(path) in str(info.value)


def test_cifar_inconsistent_coarse_labels(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path, n_train_per_class=2, n_test_per_class=1)
    path = root / "cifar-100-python" / "test"
    with open(path, "rb") as f:
        obj = pickle.load(f)
    obj["coarse_labels"][0] = (obj["coarse_labels"][0] + 1) % 20
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataFormatError, match="inconsistent with the meta") as info:
        cifar(root, val_size=2).setup()
    assert str(path) in str(info.value)


def test_cifar_meta_mismatch(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path, n_train_per_class=2, n_test_per_class=1)
    path = root / "cifar-100-python" / "meta"
    with open(path, "rb") as f:
        meta = pickle.load(f)
    meta["coarse_label_names"] = meta["coarse_label_names"][:19]
    path.write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(DataFormatError, match="coarse_label_names") as info:
        cifar(root, val_size=2).setup()
    assert str(path) in str(info.value)


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path, n_train_per_class=2, n_test_per_class=1)
    path = root / "cifar-100-python" / "meta"

    class Exploit:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    path.write_bytes(pickle.dumps({"fine_label_names": Exploit()}, protocol=2))
    with pytest.raises(DataFormatError, match="refusing"):
        cifar(root, val_size=2).setup()
    assert (tmp_path / "victim").is_dir()


def test_cifar_augmentation(cifar_root: Path) -> None:
    plain = cifar(cifar_root, batch_size=50)
    aug = cifar(cifar_root, batch_size=50, augment=True)
    plain.setup()
    aug.setup()
    assert plain.train_dataloader().transform is None
    (xp, yp), (xa, ya) = next(iter(plain.train_dataloader())), next(iter(aug.train_dataloader()))
    # Same seed -> same order; only the pixels differ.
    assert torch.equal(yp, ya)
    assert xa.shape == xp.shape == (50, 3, 32, 32)
    assert not torch.equal(xa, xp)
    # Evaluation data is never augmented.
    assert torch.equal(next(iter(aug.test_dataloader()))[0], next(iter(plain.test_dataloader()))[0])


def test_batch_random_crop_flip_is_a_crop() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    transform = BatchRandomCropFlip(padding=2, fill=(-1.0, -2.0, -3.0))
    out = transform(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for c, fill in enumerate((-1.0, -2.0, -3.0)):
        padded[:, c][padded[:, c] == 0] = fill
    padded[0, 0, 2, 2] = 0.0  # the one genuine zero pixel of x
    for i in range(2):
        # Every output must be some crop of the padded image, possibly mirrored.
        crops = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], k) or torch.equal(out[i], k.flip(-1)) for k in crops)
    # Deterministic for a given generator seed.
    again = transform(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


# --- TensorBatchLoader ------------------------------------------------------------------


def make_data(n: int = 103) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n)


def epoch_ids(loader: TensorBatchLoader) -> list[int]:
    ids: list[int] = []
    for xb, yb in loader:
        assert torch.equal(xb[:, 0].long(), yb)  # x and y stay aligned
        ids += yb.tolist()
    return ids


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_covers_every_sample_once(shuffle: bool) -> None:
    x, y = make_data(103)
    loader = TensorBatchLoader(x, y, batch_size=10, shuffle=shuffle, seed=3)
    assert len(loader) == 11
    batches = list(loader)
    assert len(batches) == 11 and len(batches[-1][0]) == 3
    for _ in range(2):
        ids = epoch_ids(loader)
        assert sorted(ids) == list(range(103))
        assert (ids == list(range(103))) is not shuffle


def test_loader_drop_last() -> None:
    x, y = make_data(103)
    loader = TensorBatchLoader(x, y, batch_size=10, drop_last=True)
    assert len(loader) == 10
    assert [len(b) for b, _ in loader] == [10] * 10


def test_loader_shuffle_reproducible_and_changes_per_epoch() -> None:
    x, y = make_data(50)
    a = TensorBatchLoader(x, y, batch_size=7, shuffle=True, seed=11)
    b = TensorBatchLoader(x, y, batch_size=7, shuffle=True, seed=11)
    c = TensorBatchLoader(x, y, batch_size=7, shuffle=True, seed=12)
    a_epochs = [epoch_ids(a) for _ in range(3)]
    b_epochs = [epoch_ids(b) for _ in range(3)]
    assert a_epochs == b_epochs
    assert a_epochs[0] != a_epochs[1] != a_epochs[2]
    assert epoch_ids(c) != a_epochs[0]


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_shards_disjoint(shuffle: bool) -> None:
    x, y = make_data(120)
    shards = [
        epoch_ids(TensorBatchLoader(x, y, 8, shuffle=shuffle, seed=5, num_replicas=3, rank=r))
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [40, 40, 40]
    assert sorted(shards[0] + shards[1] + shards[2]) == list(range(120))


def test_loader_shards_uneven() -> None:
    x, y = make_data(103)
    # drop_last truncates to a multiple of the world size: disjoint, equal length.
    dropped = [
        epoch_ids(TensorBatchLoader(x, y, 10, True, 1, drop_last=True, num_replicas=2, rank=r))
        for r in range(2)
    ]
    assert [len(s) for s in dropped] == [50, 50]
    assert not set(dropped[0]) & set(dropped[1])
    # Otherwise the list is padded by wrap-around so every rank runs the same steps.
    padded = [TensorBatchLoader(x, y, 10, num_replicas=2, rank=r) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 6
    ids = [epoch_ids(p) for p in padded]
    assert set(ids[0]) | set(ids[1]) == set(range(103))


def test_loader_transform_gets_generator() -> None:
    x, y = make_data(20)
    calls = []

    def transform(xb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append(len(xb))
        return xb + torch.rand(xb.shape, generator=generator)

    first = [xb for xb, _ in TensorBatchLoader(x, y, 8, transform=transform, seed=1)]
    second = [xb for xb, _ in TensorBatchLoader(x, y, 8, transform=transform, seed=1)]
    assert calls == [8, 8, 4, 8, 8, 4]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], x[:8])


def test_loader_argument_errors() -> None:
    x, y = make_data(10)
    with pytest.raises(ValueError, match="batch_size=0"):
        TensorBatchLoader(x, y, 0)
    with pytest.raises(ValueError, match="rank=2"):
        TensorBatchLoader(x, y, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="differ in length"):
        TensorBatchLoader(x, y[:5], 2)


# --- synthetic data -----------------------------------------------------------------------


def test_synthetic_data_is_learnable(fmnist_root: Path, empty_dir: Path) -> None:
    # Nearest class mean on the training split must beat chance (0.1) by a wide margin.
    dm = fmnist(fmnist_root, empty_dir)
    dm.setup()
    means = torch.stack([dm.train_x[dm.train_y == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(dm.test_x.flatten(1), means).argmin(1)
    assert (pred == dm.test_y).float().mean() > 0.5


def test_synthetic_writers_are_deterministic(tmp_path: Path) -> None:
    a = write_fashion_mnist(tmp_path / "a", n_train=50, n_test=10, seed=4)
    b = write_fashion_mnist(tmp_path / "b", n_train=50, n_test=10, seed=4)
    for name in IDX_FILES.values():
        rel = Path("FashionMNIST") / "raw" / f"{name}.gz"
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    c = write_cifar100(tmp_path / "c", 1, 1, seed=4)
    d = write_cifar100(tmp_path / "d", 1, 1, seed=4)
    for name in ("train", "test", "meta"):
        rel = Path("cifar-100-python") / name
        assert (c / rel).read_bytes() == (d / rel).read_bytes()


def test_base_class_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        _ = InMemoryDataModule().class_names


# --- real data ------------------------------------------------------------------------------


def test_run_if_looks_for_the_real_fashion_mnist_files() -> None:
    """RunIf(fashion_mnist=True) checks the files the datamodule reads (names kept there
    without importing the datamodule)."""
    assert set(FASHION_MNIST_FILES) == {f"{name}.gz" for name in IDX_FILES.values()}


@pytest.mark.slow
@RunIf(fashion_mnist=True)
def test_real_fashion_mnist_from_system_copy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./data here: without --data.data_dir the system copy is used
    dm = FashionMNISTDataModule(download=False)
    dm.setup()
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (50000, 10000, 10000)
    assert dm.num_classes == 10
    assert torch.bincount(dm.test_y).tolist() == [1000] * 10
    assert dm.train_x.shape[1:] == (1, 28, 28) and dm.train_x.dtype == torch.float32
    lineage = dm.lineage
    assert lineage["source"] == "system"
    assert lineage["source_path"] == str(SYSTEM_FASHION_MNIST.resolve())
    # Normalization constants are the dataset's: standardized pixels have mean ~0, std ~1.
    assert abs(float(dm.train_x.mean())) < 0.01
    assert abs(float(dm.train_x.std()) - 1.0) < 0.01


def test_superclass_names_in_any_case_or_separator():
    from datamodules.cifar100 import resolve_superclass

    for typed in (
        "Large man-made outdoor things",
        "LARGE_MAN_MADE_OUTDOOR_THINGS",
        "largemanmadeoutdoorthings",
    ):
        assert resolve_superclass(typed) == "large_man-made_outdoor_things"
    with pytest.raises(ValueError, match=r"did you mean vehicles_1\?"):
        resolve_superclass("vehicle 1")
