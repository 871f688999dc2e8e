"""Speed benchmark: the project's `run` path against a bare PyTorch loop, side by side.

    python -m experiments bench speed            # full: several epochs per case
    python -m experiments bench speed --quick    # CI: a few hundred batches per case
    python -m experiments bench speed --json     # one JSON object with the headline figures

For S1.2 (MLP 784-128-10, SGD, batch 64), S1.3 (four-block CNN, Adam, batch 64) and S0.3
(LeNet, Adam, batch 4 on 2,500 CIFAR-shaped images) it times, in this one process:
(a) a bare PyTorch loop over the same in-memory tensors (the reference), (b) the project's
own `run` path with MLflow tracking on, and for S1.2 (c) the conventional set-up
(torchvision `FashionMNIST` + `ToTensor`, default `DataLoader`, default `Trainer`), and
(d) Lightning's floor: the Trainer driving a minimal LightningModule (forward, loss) on the
same batches with no logger, callbacks or metrics, which separates what Lightning's loop
costs per step from what the project adds. (a), (b) and (d) use the thread count the run
path chooses (experiments/threads.py). The cheap cases (S1.2, S0.3) run the three paths
in three alternating rounds, so the drift of a shared machine hits them alike. Seconds per
epoch are the median over the measured epochs after one warm-up epoch per path;
validation time is excluded from (b) and (c) because (a) has none (`--quick` validates and
tests on 20 batches only: neither is in the per-epoch figures). Also measured: CLI cold
start (`python -m experiments --help`), time from `run` to the first training step (a
fresh process), and the share of a 1-epoch S1.2 run's wall time spent in MLflow calls.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- (a) the bare loop --------------------------------------------------------------------


def bare_epoch_times(
    make_network: Callable, make_optimizer: Callable, x, y, batch_size: int, epochs: int, limit
) -> list[float]:
    """Seconds of each epoch of a plain loop (shuffle, slice, forward, loss, backward,
    step): `epochs + 1` values, the first being the warm-up epoch, which also holds one-off
    costs such as a torch.compile compilation (`bench kernels` reports it)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    network = make_network()
    optimizer = make_optimizer(network.parameters())
    network.train()
    n = len(x) if limit is None else min(len(x), limit * batch_size)
    times = []
    for _ in range(epochs + 1):  # +1: the first epoch is the warm-up
        start = time.perf_counter()
        perm = torch.randperm(len(x))[:n]
        xs, ys = x[perm], y[perm]
        for i in range(0, n, batch_size):
            loss = F.cross_entropy(network(xs[i : i + batch_size]), ys[i : i + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


# --- (b)/(c) epoch timing through Lightning ---------------------------------------------


def _epoch_timer():
    """A callback that records training-epoch durations minus the validation inside them."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0
            self._val = 0.0
            self._val_start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start, self._val = time.perf_counter(), 0.0

        def on_validation_start(self, trainer, pl_module) -> None:
            self._val_start = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            self._val += time.perf_counter() - self._val_start

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.times.append(time.perf_counter() - self._start - self._val)

    return EpochTimer()


def project_epoch_times(
    name: str, overrides: list[str], uri: str, epochs: int
) -> tuple[list[float], float]:
    """Seconds per epoch of `python -m experiments run NAME` (tracking on); and its wall time."""
    from experiments.training.config import parse
    from experiments.training.runner import run_experiment

    cfg = parse(name, [*overrides, "--trainer.max_epochs", str(epochs + 1)])
    timer = _epoch_timer()
    start = time.perf_counter()
    run_experiment(cfg, uri, callbacks=[timer])
    return timer.times[1:], time.perf_counter() - start


def lightning_floor_epoch_times(
    make_network: Callable, make_optimizer: Callable, x, y, batch_size: int, epochs: int, limit
) -> list[float]:
    """The Trainer's own cost: a minimal LightningModule (forward, loss, return) on the same
    in-memory batches, no logger, callbacks, metrics, checkpoints or progress bar.

    The project's run path cannot be faster than this; (b) - (d) is what the project adds,
    (d) - (a) is what Lightning's training loop costs per step.
    """
    import lightning as L
    import torch
    import torch.nn.functional as F

    from datamodules.tensor_loader import TensorBatchLoader

    class MinimalModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.network = make_network()

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.network(batch[0]), batch[1])

        def configure_optimizers(self):
            return make_optimizer(self.parameters())

    torch.manual_seed(0)
    timer = _epoch_timer()
    trainer = L.Trainer(
        max_epochs=epochs + 1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        limit_train_batches=limit,
    )
    trainer.fit(MinimalModule(), TensorBatchLoader(x, y, batch_size, shuffle=True))
    return timer.times[1:]


def conventional_epoch_times(raw_dir: Path, epochs: int, limit, workdir: Path) -> list[float]:
    """torchvision FashionMNIST + ToTensor + default DataLoader + default Trainer (S1.2 model)."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from models.components import MLP

    class PlainModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.network = MLP(784, 10, [128])

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.network(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    # torchvision wants the uncompressed files under <root>/FashionMNIST/raw.
    root = workdir / "torchvision"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in raw_dir.glob("*-ubyte.gz"):
        target = raw / gz.name[: -len(".gz")]
        if not target.exists():
            with gzip.open(gz) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    dataset = datasets.FashionMNIST(root, train=True, transform=transforms.ToTensor())
    torch.manual_seed(0)
    timer = _epoch_timer()
    trainer = L.Trainer(
        max_epochs=epochs + 1,
        accelerator="cpu",
        default_root_dir=str(workdir / "conventional"),
        callbacks=[timer],
        limit_train_batches=limit,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(PlainModule(), DataLoader(dataset, batch_size=64, shuffle=True))
    return timer.times[1:]


# --- whole-process figures ----------------------------------------------------------------


def cli_help_seconds(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "experiments", "--help"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


FIRST_STEP_PROBE = """
import sys, time
import lightning as L
from experiments.training.config import parse
from experiments.training.runner import run_experiment

class FirstStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0 and trainer.current_epoch == 0:
            print("FIRST_STEP", time.time(), flush=True)

run_experiment(parse(sys.argv[1], sys.argv[3:]), sys.argv[2], callbacks=[FirstStep()])
"""


def first_step_seconds(name: str, overrides: list[str], uri: str, workdir: Path) -> float:
    """Wall time from spawning `run` (a fresh interpreter) to its first training batch."""
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_STEP_PROBE, name, uri, *overrides],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_STEP"):
            return float(line.split()[1]) - start
    raise RuntimeError(f"the probe printed no FIRST_STEP line:\n{proc.stdout}\n{proc.stderr}")


IMPORT_FLOOR_PROBE = """
import sys, time
import torch, lightning, mlflow
from mlflow import MlflowClient
MlflowClient(sys.argv[1]).search_experiments(max_results=1)
print("READY", time.time(), flush=True)
"""


def import_floor_seconds(uri: str, workdir: Path) -> float:
    """Wall time for a fresh interpreter to import torch, lightning and mlflow and open the
    store: what any Lightning + MLflow run pays before its own code starts."""
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_FLOOR_PROBE, uri],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("READY"):
            return float(line.split()[1]) - start
    raise RuntimeError(f"the probe printed no READY line:\n{proc.stdout}\n{proc.stderr}")


@contextmanager
def mlflow_call_timer():
    """Time spent inside MlflowClient methods (outermost calls only), for the tracking share."""
    from mlflow import MlflowClient

    spent = {"seconds": 0.0, "calls": 0}
    depth = {"n": 0}
    originals = {}

    def wrap(fn):
        def timed(*args, **kwargs):
            depth["n"] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth["n"] -= 1
                if depth["n"] == 0:
                    spent["seconds"] += time.perf_counter() - start
                    spent["calls"] += 1

        return timed

    for attr in dir(MlflowClient):
        value = getattr(MlflowClient, attr)
        if not attr.startswith("_") and callable(value) and not isinstance(value, type):
            originals[attr] = value
            setattr(MlflowClient, attr, wrap(value))
    try:
        yield spent
    finally:
        for attr, value in originals.items():
            setattr(MlflowClient, attr, value)


# --- data -------------------------------------------------------------------------------


def fashion_source(workdir: Path) -> tuple[Path, str]:
    """The real Fashion-MNIST if installed, else a generated full-size stand-in."""
    if all((FASHION_SYSTEM_DIR / f).exists() for f in ("train-images-idx3-ubyte.gz",)):
        return FASHION_SYSTEM_DIR, "real Fashion-MNIST"
    from datamodules.synthetic import write_fashion_mnist

    root = write_fashion_mnist(workdir / "fashion", n_train=60000, n_test=10000)
    return root / "FashionMNIST" / "raw", "generated Fashion-MNIST-shaped data"


def cifar_source(workdir: Path) -> tuple[Path, str]:
    """Generated CIFAR-100-format data: 500 train images per fine class (2,500 per superclass)."""
    from datamodules.synthetic import write_cifar100

    root = write_cifar100(workdir / "cifar", n_train_per_class=500, n_test_per_class=100)
    return root, "generated CIFAR-shaped data (real CIFAR-100 unavailable offline)"


# --- the benchmark ----------------------------------------------------------------------


def check_same_training(name: str, overrides: list[str], make_network, make_optimizer) -> None:
    """Refuse to compare unlike things: the run path must build the bare loop's network
    and optimizer (a catalog default such as weight decay would otherwise slip in)."""
    from experiments.training.config import parse

    model, _ = parse(name, overrides).instantiate()
    network = make_network()
    ours, theirs = model.configure_optimizers(), make_optimizer(network.parameters())
    if repr(model.network) != repr(network):
        raise RuntimeError(f"{name}: the run path builds {model.network}, the bare loop {network}")
    if type(ours) is not type(theirs) or ours.defaults != theirs.defaults:
        raise RuntimeError(
            f"{name}: the run path's optimizer is {type(ours).__name__}{ours.defaults}, the "
            f"bare loop's {type(theirs).__name__}{theirs.defaults}"
        )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


#: Run-path flags every measured run shares.
COMMON_OVERRIDES = ["--trainer.enable_model_summary", "false", "--data.download", "false"]
#: --quick: validation and test batches of the run-path runs. Validation is not in the
#: per-epoch figures and the test is after them; the full splits would only lengthen CI.
QUICK_EVAL = ["--trainer.limit_val_batches", "20", "--trainer.limit_test_batches", "20"]

#: The same model and optimizer as the bare loop, whatever the catalog's defaults.
S12_MODEL = [
    *("--model.net.hidden_sizes", "[128]", "--model.optimizer", "sgd", "--model.lr", "0.1"),
    *("--model.momentum", "0", "--model.weight_decay", "0", "--model.scheduler", "none"),
]
S13_MODEL = [
    *("--model.optimizer", "adam", "--model.lr", "0.001", "--model.weight_decay", "0"),
    *("--model.scheduler", "none", "--model.label_smoothing", "0"),
]
S03_MODEL = [
    *("--model.optimizer", "adam", "--model.lr", "0.001"),
    *("--model.weight_decay", "0", "--model.scheduler", "none"),
]


def measure(
    quick: bool, workdir: Path, log: Callable[[str], None], epochs: int | None = None
) -> dict:
    """Every figure of the benchmark, in the order the table and the JSON give them."""
    import torch

    uri = f"sqlite:///{workdir}/mlruns/mlflow.db"
    epochs = epochs or (1 if quick else 3)
    fashion_dir, fashion_kind = fashion_source(workdir)
    cifar_dir, cifar_kind = cifar_source(workdir)
    cases = benchmark_cases(quick, fashion_dir, cifar_dir)
    figures: dict = {
        "threads": torch.get_num_threads(),
        "data": {"fashion": fashion_kind, "cifar": cifar_kind},
        "epochs_measured": epochs,
    }

    # The store is created once up front: its one-off schema migration is not a per-run cost.
    from experiments.tracking import store

    store.ensure_experiment(store.client(uri), uri, "warm-up")

    for key, case in cases.items():
        figures[key], figures[f"{key}_vs_bare"] = measure_case(key, case, uri, epochs, log)

    log("[s12] conventional set-up (torchvision + DataLoader + default Trainer) ...")
    conventional = conventional_epoch_times(
        fashion_dir, 1, cases["s12"]["limit"], workdir
    )  # one measured epoch: it is the slow one
    figures["s12"]["conventional_s_per_epoch"] = _median(conventional)
    figures["s12_speedup_vs_conventional"] = (
        _median(conventional) / figures["s12"]["project_s_per_epoch"]
    )

    log("CLI cold start ...")
    figures["cli_help_s"] = cli_help_seconds()
    figures["first_step_s"], figures["import_floor_s"] = measure_start_up(
        quick, fashion_dir, uri, workdir, log
    )

    log("tracking share of a 1-epoch S1.2 run ...")
    figures["tracking"] = measure_tracking(quick, fashion_dir, uri)
    figures["tracking_share"] = figures["tracking"]["mlflow_s"] / figures["tracking"]["run_wall_s"]
    figures["system_metrics_share"] = figures["tracking"]["system_metrics_share"]
    return figures


def benchmark_cases(quick: bool, fashion_dir: Path, cifar_dir: Path) -> dict[str, dict]:
    """S1.2, S1.3 and S0.3: the run-path experiment, its data, the bare loop's network and
    optimizer, the run-path flags that build the same, and how many batches and rounds."""
    import torch

    from datamodules import CIFAR100SuperclassDataModule, FashionMNISTDataModule
    from models.components import MLP, FourBlockCNN, LeNet

    fashion = FashionMNISTDataModule(data_dir=str(fashion_dir), download=False)
    fashion.setup()
    cifar = CIFAR100SuperclassDataModule(data_dir=str(cifar_dir), download=False)
    cifar.setup()
    return {
        "s12": dict(
            name="s1-mlp",
            x=fashion.train_x,
            y=fashion.train_y,
            batch=64,
            net=lambda: MLP(784, 10, [128]),
            opt=lambda p: torch.optim.SGD(p, lr=0.1),
            data=["--data.data_dir", str(fashion_dir)],
            model=S12_MODEL,
            limit=300 if quick else None,
            evaluation=QUICK_EVAL if quick else [],
            rounds=1 if quick else 3,
        ),
        "s13": dict(
            name="s1-cnn",
            x=fashion.train_x,
            y=fashion.train_y,
            batch=64,
            net=lambda: FourBlockCNN(),
            opt=lambda p: torch.optim.Adam(p, lr=1e-3),
            data=["--data.data_dir", str(fashion_dir)],
            model=S13_MODEL,
            limit=40 if quick else None,
            evaluation=QUICK_EVAL if quick else [],
            rounds=1,  # 40 s per epoch: drift averages out within the epoch
        ),
        "s03": dict(
            name="s0-cnn",
            x=cifar.train_x,
            y=cifar.train_y,
            batch=4,
            net=lambda: LeNet(),
            opt=lambda p: torch.optim.Adam(p, lr=1e-3),
            data=["--data.data_dir", str(cifar_dir)],
            model=S03_MODEL,
            limit=300 if quick else None,
            evaluation=QUICK_EVAL if quick else [],
            rounds=1 if quick else 3,
        ),
    }


def case_overrides(case: dict) -> list[str]:
    """The run-path flags of one case: its data, model, batch size and batch limits."""
    overrides = [
        *COMMON_OVERRIDES,
        *case["data"],
        *case["model"],
        *("--trainer.enable_progress_bar", "true"),
        *("--data.batch_size", str(case["batch"])),
    ]
    if case["limit"] is not None:
        overrides += ["--trainer.limit_train_batches", str(case["limit"])]
    return [*overrides, *case["evaluation"]]


def measure_case(
    key: str, case: dict, uri: str, epochs: int, log: Callable[[str], None]
) -> tuple[dict, float]:
    """The bare loop, the run path and the Lightning floor of one case, in alternating
    rounds: the case's details (medians, the floor's ratio to the bare loop) and the
    headline ratio of the run path to the bare loop."""
    from experiments.training import threads

    # The bare loop and the floor use the thread count the run path picks for itself
    # (experiments/threads.py), so the three are compared on equal terms.
    choice = threads.choose(None, case["net"](), case["x"][: case["batch"]])
    overrides = case_overrides(case)
    check_same_training(case["name"], overrides, case["net"], case["opt"])
    # This machine's speed drifts by tens of percent over a minute (shared host): the
    # three paths are measured in alternating rounds so drift hits all of them alike.
    bare, project, floor = [], [], []
    # The same network, optimizer, data, batch size and length for (a) and (d).
    training = (case["net"], case["opt"], case["x"], case["y"], case["batch"], epochs)
    training += (case["limit"],)
    for round_ in range(1, case["rounds"] + 1):
        tag = f"[{key}] round {round_}/{case['rounds']}:"
        log(f"{tag} bare loop ({choice.threads} thread(s)) ...")
        with threads.using(choice.threads):
            bare += bare_epoch_times(*training)[1:]  # [0] is the warm-up epoch
        log(f"{tag} project run path (tracking on) ...")
        project += project_epoch_times(case["name"], overrides, uri, epochs)[0]
        log(f"{tag} Lightning floor (minimal module, no logger or callbacks) ...")
        with threads.using(choice.threads):
            floor += lightning_floor_epoch_times(*training)
    batches = -(-len(case["x"]) // case["batch"]) if case["limit"] is None else case["limit"]
    ratio = _median(project) / _median(bare)
    log(
        f"[{key}] bare {_median(bare):.3f} s/epoch, Lightning floor {_median(floor):.3f}, "
        f"project {_median(project):.3f}, ratio {ratio:.3f}"
    )
    details = {
        "threads": choice.threads,
        "rounds": case["rounds"],
        "bare_s_per_epoch": _median(bare),
        "lightning_floor_s_per_epoch": _median(floor),
        "project_s_per_epoch": _median(project),
        "batches_per_epoch": batches,
        "lightning_floor_vs_bare": _median(floor) / _median(bare),
    }
    return details, ratio


def _s12_run_overrides(fashion_dir: Path) -> list[str]:
    """One S1.2 epoch through the run path, with the bare loop's model and optimizer."""
    overrides = [*COMMON_OVERRIDES, *S12_MODEL, "--data.data_dir", str(fashion_dir)]
    return [*overrides, "--trainer.max_epochs", "1"]


def measure_start_up(
    quick: bool, fashion_dir: Path, uri: str, workdir: Path, log: Callable[[str], None]
) -> tuple[float, float]:
    """(time from `run` to the first training step, the import floor), fresh processes."""
    log("time to first training step (fresh process) ...")
    first_overrides = _s12_run_overrides(fashion_dir)
    first_overrides += [
        *("--trainer.limit_train_batches", "1"),
        *("--trainer.enable_progress_bar", "false"),
    ]
    # Fresh processes, alternating, median of three (one in --quick): a cold start is the
    # noisiest figure here, and the import floor is its reference.
    first_steps, import_floors = [], []
    for _ in range(1 if quick else 3):
        first_steps.append(first_step_seconds("s1-mlp", first_overrides, uri, workdir))
        log("import floor: torch + lightning + mlflow + opening the store (fresh process) ...")
        import_floors.append(import_floor_seconds(uri, workdir))
    return _median(first_steps), _median(import_floors)


def fit_end_timer():
    """A callback that records when `trainer.fit` returns (`.at`): what follows (test,
    model, figures, uploads) is the end-of-run cost every run pays."""
    import lightning as L

    class FitEnd(L.Callback):
        at: float | None = None

        def on_fit_end(self, trainer, pl_module) -> None:
            self.at = time.perf_counter()

    return FitEnd()


@contextmanager
def _timed(owner, names: Sequence[str], spent: dict[str, float]):
    """Add the seconds spent in `owner.NAME(...)` for each name to `spent[NAME]`."""
    originals = {name: getattr(owner, name) for name in names}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return timed

    for name, fn in originals.items():
        setattr(owner, name, wrap(name, fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(owner, name, fn)


#: what the `judgement`, `figures` and `model_summary` outputs of a run call (artifacts.py)
FIGURES_AND_SUMMARY = ("log_judgement", "log_figures", "log_model_summary")


def measure_tracking(quick: bool, fashion_dir: Path, uri: str) -> dict:
    """MLflow time, call count and wall time of a 1-epoch S1.2 run; the time spent drawing
    and logging its figures and model summary, logging its model, sampling system metrics;
    and the end-of-run cost (from `fit` returning to the run being closed)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from experiments.tracking import artifacts as run_artifacts
    from experiments.tracking import logged_model
    from experiments.training.config import parse
    from experiments.training.runner import run_experiment

    overrides = _s12_run_overrides(fashion_dir)
    overrides += ["--trainer.limit_train_batches", "300", *QUICK_EVAL] if quick else []
    fit_end = fit_end_timer()
    spent: dict[str, float] = {}
    with (
        # Figures and the model summary are drawn after training and logged as artifacts;
        # the model is exported and logged; the monitor samples in its own thread.
        _timed(run_artifacts, FIGURES_AND_SUMMARY, spent),
        _timed(logged_model, ["log_trained_model"], spent),
        _timed(SystemMetricsMonitor, ["collect_metrics", "publish_metrics"], spent),
        mlflow_call_timer() as calls,
    ):
        start = time.perf_counter()
        run_experiment(parse("s1-mlp", overrides), uri, callbacks=[fit_end])
        end = time.perf_counter()
    wall = end - start
    system = spent.get("collect_metrics", 0.0) + spent.get("publish_metrics", 0.0)
    return {
        "mlflow_s": calls["seconds"],
        "calls": calls["calls"],
        "run_wall_s": wall,
        "figures_and_summary_s": sum(spent.get(name, 0.0) for name in FIGURES_AND_SUMMARY),
        "log_model_s": spent.get("log_trained_model", 0.0),
        "system_metrics_s": system,
        "system_metrics_share": system / wall,
        "end_of_run_s": end - (fit_end.at or end),
    }


TARGETS = {
    "s12_vs_bare": ("<=", 1.5),
    "s12_speedup_vs_conventional": (">=", 5.0),
    "s13_vs_bare": ("<=", 1.05),
    "s03_vs_bare": ("<=", 1.25),
    "cli_help_s": ("<=", 1.0),
    "first_step_s": ("<=", 5.0),
    "tracking_share": ("<=", 0.03),
    "system_metrics_share": ("<=", 0.01),
}
JSON_KEYS = tuple(TARGETS)


def _verdict(key: str, value: float) -> str:
    op, bound = TARGETS[key]
    ok = value <= bound if op == "<=" else value >= bound
    return f"{op} {bound:<5} {'met' if ok else 'MISSED'}"


def print_table(figures: dict) -> None:
    from experiments.tracking.store import environment_tags

    env = environment_tags()
    print(f"\nhardware: {env['hardware']}; torch default threads {figures['threads']}")
    print(
        f"versions: torch {env['version.torch']}, lightning {env['version.lightning']}, "
        f"mlflow {env['version.mlflow']}; epochs measured per case: {figures['epochs_measured']}"
    )
    print(f"data: {figures['data']['fashion']}; S0.3: {figures['data']['cifar']}\n")
    print(
        f"{'case':<6} {'threads':>7} {'batches':>8} {'bare s/ep':>10} {'floor s/ep':>11} "
        f"{'project s/ep':>13} {'conv s/ep':>10}"
    )
    for key in ("s12", "s13", "s03"):
        row = figures[key]
        conv = row.get("conventional_s_per_epoch")
        print(
            f"{key:<6} {row['threads']:>7} {row['batches_per_epoch']:>8} "
            f"{row['bare_s_per_epoch']:>10.3f} "
            f"{row['lightning_floor_s_per_epoch']:>11.3f} {row['project_s_per_epoch']:>13.3f} "
            f"{'' if conv is None else f'{conv:10.3f}':>10}"
        )
    print(
        "floor = the Trainer with a minimal LightningModule, no logger/callbacks/metrics "
        "(what Lightning's loop alone costs)"
    )
    print(
        f"run -> first training step {figures['first_step_s']:.2f} s, of which importing "
        f"torch + lightning + mlflow and opening the store takes {figures['import_floor_s']:.2f} s"
    )
    t = figures["tracking"]
    print(
        f"\ntracking: {t['mlflow_s']:.3f} s in {t['calls']} MLflow calls "
        f"of a {t['run_wall_s']:.2f} s 1-epoch S1.2 run; figures and model summary "
        f"(drawing + logging) {t['figures_and_summary_s']:.2f} s; the model (export + "
        f"logging) {t['log_model_s']:.2f} s; system metrics sampling {t['system_metrics_s']:.3f} s"
        f"\nend of run (test, model, figures, uploads, after fit returns): "
        f"{t['end_of_run_s']:.2f} s\n"
    )
    print(f"{'figure':<30} {'value':>8}  target")
    for key in JSON_KEYS:
        print(f"{key:<30} {figures[key]:>8.3f}  {_verdict(key, figures[key])}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments bench speed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short epochs (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--epochs", type=int, help="measured epochs per case (default 3; 1 quick)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(workdir)  # Lightning's default root (conventional set-up) lands here
        try:
            # Progress bars and Lightning's messages go to stderr, so stdout holds only the
            # table or the one JSON object.
            with contextlib.redirect_stdout(sys.stderr):
                figures = measure(args.quick, workdir, log, args.epochs)
        finally:
            os.chdir(cwd)
    if args.json:
        print(json.dumps({key: figures[key] for key in JSON_KEYS} | {"details": figures}))
    else:
        print_table(figures)
    return 0
