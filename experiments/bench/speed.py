"""Speed benchmark: the project's `run` path against a bare PyTorch loop and Lightning's floor.

    python -m experiments bench speed            # full: several epochs per case
    python -m experiments bench speed --quick    # CI: a few hundred batches per case
    python -m experiments bench speed --json     # one JSON object with the headline figures

For S1.2 (the seed's MLP 784-128-10, SGD lr 0.1, batch 64: NOT the catalog's `s1-mlp`,
784-512-10, whose flags `S12_MODEL` overrides), S1.3 (four-block CNN, Adam, batch 64) and
S0.3 (LeNet, Adam, batch 4 on 2,500 CIFAR-shaped images) it times, in this one process:
(a) a bare PyTorch loop over the same in-memory tensors (the reference), (b) the project's
own `run` path with MLflow tracking on, and for S1.2 (c) the conventional set-up
(torchvision `FashionMNIST` + `ToTensor`, default `DataLoader`, default `Trainer`), and
(d) Lightning's floor, defined once and frozen (`FLOOR_DEFINITION`): a minimal
LightningModule (forward + cross-entropy loss in `training_step`, the same plain optimizer
in `configure_optimizers`, nothing else) driven by `Trainer(logger=False,
enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)` on the
same in-memory batches. (b) - (d) is what the project adds to what Lightning itself costs.
(a), (b) and (d) run on one thread count: the one the run path's policy picks for the
model (experiments/training/threads.py), passed to (b) as `--threads N`.

The three paths run in alternating rounds (S1.2: `S12_ROUNDS`, at least 5; the order of
project and floor swaps every round), so the drift of a shared machine hits them alike;
`s12_vs_floor` is the median over the rounds of each round's project / floor ratio and
`s12_vs_floor_spread` the largest minus the smallest of those ratios. Seconds per epoch
are the median over the measured epochs after one warm-up epoch per path; validation time
is excluded from (b) and (c) because (a) has none (`--quick` validates and tests on 20
batches only: neither is in the per-epoch figures). Also measured: CLI cold start
(`python -m experiments --help`), the time from `run` to the first training step (a fresh
process) minus the import floor (a fresh process importing torch, lightning and mlflow and
opening the store), paired and alternated (`first_step_minus_import_s`: the median of the
pairs' differences), and the share of a 1-epoch S1.2 run's wall time spent in MLflow calls.
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
    """A callback that records training-epoch durations minus the validation inside them:
    wall seconds (`times`) and this process's CPU seconds (`cpu_times`, which a busy
    neighbour on a shared machine disturbs far less than the wall clock)."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            #: torch's intra-op thread count at the start of each epoch
            self.threads: list[int] = []
            self.cpu_times: list[float] = []
            self._start = self._val = self._val_start = 0.0
            self._cpu_start = self._cpu_val = self._cpu_val_start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            import torch

            self.threads.append(torch.get_num_threads())
            self._start, self._val = time.perf_counter(), 0.0
            self._cpu_start, self._cpu_val = time.process_time(), 0.0

        def on_validation_start(self, trainer, pl_module) -> None:
            self._val_start, self._cpu_val_start = time.perf_counter(), time.process_time()

        def on_validation_end(self, trainer, pl_module) -> None:
            self._val += time.perf_counter() - self._val_start
            self._cpu_val += time.process_time() - self._cpu_val_start

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.times.append(time.perf_counter() - self._start - self._val)
            self.cpu_times.append(time.process_time() - self._cpu_start - self._cpu_val)

    return EpochTimer()


def project_epoch_times(name: str, overrides: list[str], uri: str, epochs: int):
    """The epoch timer of `python -m experiments run NAME` (tracking on): wall and CPU
    seconds of each epoch, the warm-up epoch first, and the thread count of each."""
    from experiments.training.config import parse
    from experiments.training.runner import run_experiment

    cfg = parse(name, [*overrides, "--trainer.max_epochs", str(epochs + 1)])
    timer = _epoch_timer()
    run_experiment(cfg, uri, callbacks=[timer])
    return timer


#: Lightning's floor, frozen: change it only with a note on the benchmarks page, since every
#: `*_vs_floor` figure before and after would no longer compare.
FLOOR_DEFINITION = (
    "Lightning's floor: a minimal LightningModule (training_step = forward + cross-entropy "
    "loss, configure_optimizers = the same plain optimizer; no metrics, no self.log) driven "
    "by Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, "
    "enable_model_summary=False), no callbacks but the epoch timer, on the same in-memory "
    "batches (TensorBatchLoader) and thread count as the project's run"
)


def lightning_floor_epoch_times(
    make_network: Callable, make_optimizer: Callable, x, y, batch_size: int, epochs: int, limit
):
    """The epoch timer (as `project_epoch_times`) of Lightning's floor (`FLOOR_DEFINITION`, frozen): a
    minimal LightningModule (forward, loss, return) on the same in-memory batches, no
    logger, metrics, checkpoints, progress bar or model summary; the only callback is the
    epoch timer every path has. Runs on torch's current thread count (`threads.using`).

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
    return timer


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


#: Fresh-process pairs (run -> first step, import floor) of the start-up figures.
START_UP_PAIRS = 5
#: What "S1.2" is here (printed and in the JSON details).
S12_NETWORK = (
    "S1.2 = the seed task's 784-128-10 MLP, SGD lr 0.1, batch 64 (not the catalog's s1-mlp, "
    "784-512-10: the run path gets S12_MODEL's flags)"
)
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
#: S1.2's alternations of project and floor (s12_vs_floor is their median ratio).
S12_ROUNDS = 5
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
        "floor_definition": FLOOR_DEFINITION,
        "s12_network": S12_NETWORK,
        "threads": torch.get_num_threads(),
        "data": {"fashion": fashion_kind, "cifar": cifar_kind},
        "epochs_measured": epochs,
    }

    # The store is created once up front: its one-off schema migration is not a per-run cost.
    from experiments.tracking import store

    store.ensure_experiment(store.client(uri), uri, "warm-up")

    for key, case in cases.items():
        figures[key], figures[f"{key}_vs_bare"] = measure_case(key, case, uri, epochs, log)
    figures["s12_vs_floor"] = figures["s12"]["project_vs_floor"]
    figures["s12_vs_floor_spread"] = figures["s12"]["project_vs_floor_spread"]

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
    start_up = measure_start_up(quick, fashion_dir, uri, workdir, log)
    figures["first_step_s"], figures["import_floor_s"] = (
        start_up["first_step_s"],
        start_up["import_floor_s"],
    )
    figures["first_step_minus_import_s"] = start_up["first_step_minus_import_s"]
    figures["start_up"] = start_up

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
            rounds=S12_ROUNDS,  # --quick too: s12_vs_floor is always a median of 5
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
    rounds: the case's details (medians, each round's project / floor ratio, the floor's
    ratio to the bare loop) and the headline ratio of the run path to the bare loop."""
    from experiments.training import threads

    # One thread count for all three paths: the one the run path's policy picks for the
    # model (experiments/training/threads.py), given to the run as --threads so that it
    # cannot pick another (a probe, a busy neighbour).
    choice = threads.choose(None, case["net"](), case["x"][: case["batch"]])
    overrides = [*case_overrides(case), "--threads", str(choice.threads)]
    check_same_training(case["name"], overrides, case["net"], case["opt"])
    # This machine's speed drifts by tens of percent over a minute (shared host): the
    # three paths are measured in alternating rounds so drift hits all of them alike, and
    # project and floor swap order every round so neither always runs second.
    bare, project, floor, ratios, cpu_ratios, used = [], [], [], [], [], set()
    # The same network, optimizer, data, batch size and length for (a) and (d).
    training = (case["net"], case["opt"], case["x"], case["y"], case["batch"], epochs)
    training += (case["limit"],)
    for round_ in range(1, case["rounds"] + 1):
        tag = f"[{key}] round {round_}/{case['rounds']}:"
        log(f"{tag} bare loop ({choice.threads} thread(s)) ...")
        with threads.using(choice.threads):
            bare += bare_epoch_times(*training)[1:]  # [0] is the warm-up epoch
        paths = ["project", "floor"] if round_ % 2 else ["floor", "project"]
        timers = {}
        for path in paths:
            if path == "project":
                log(f"{tag} project run path (tracking on) ...")
                timers[path] = project_epoch_times(case["name"], overrides, uri, epochs)
                used |= set(timers[path].threads)
            else:
                log(f"{tag} Lightning floor (minimal module, no logger or callbacks) ...")
                with threads.using(choice.threads):
                    timers[path] = lightning_floor_epoch_times(*training)
        ours, theirs = timers["project"], timers["floor"]  # [0] is the warm-up epoch
        project += ours.times[1:]
        floor += theirs.times[1:]
        ratios.append(_median(ours.times[1:]) / _median(theirs.times[1:]))
        cpu_ratios.append(_median(ours.cpu_times[1:]) / _median(theirs.cpu_times[1:]))
    if used != {choice.threads}:
        raise RuntimeError(f"[{key}] the run trained on {used} threads, not {choice.threads}")
    batches = -(-len(case["x"]) // case["batch"]) if case["limit"] is None else case["limit"]
    ratio = _median(project) / _median(bare)
    log(
        f"[{key}] bare {_median(bare):.3f} s/epoch, Lightning floor {_median(floor):.3f}, "
        f"project {_median(project):.3f}, ratio {ratio:.3f}, project/floor per round "
        + " ".join(f"{r:.3f}" for r in ratios)
        + " (CPU time: "
        + " ".join(f"{r:.3f}" for r in cpu_ratios)
        + ")"
    )
    details = {
        "threads": choice.threads,
        "rounds": case["rounds"],
        "bare_s_per_epoch": _median(bare),
        "lightning_floor_s_per_epoch": _median(floor),
        "project_s_per_epoch": _median(project),
        "batches_per_epoch": batches,
        "lightning_floor_vs_bare": _median(floor) / _median(bare),
        "project_vs_floor_rounds": ratios,
        "project_vs_floor": _median(ratios),
        "project_vs_floor_spread": max(ratios) - min(ratios),
        # The same ratio in CPU seconds of this process: a check on the wall-clock figure
        # when a neighbour shares the cores (it slows the wall clock, much less the CPU time).
        "project_vs_floor_cpu_rounds": cpu_ratios,
        "project_vs_floor_cpu": _median(cpu_ratios),
    }
    return details, ratio


def _s12_run_overrides(fashion_dir: Path) -> list[str]:
    """One S1.2 epoch through the run path, with the bare loop's model and optimizer."""
    overrides = [*COMMON_OVERRIDES, *S12_MODEL, "--data.data_dir", str(fashion_dir)]
    return [*overrides, "--trainer.max_epochs", "1"]


def measure_start_up(
    quick: bool, fashion_dir: Path, uri: str, workdir: Path, log: Callable[[str], None]
) -> dict:
    """Time from `run` to the first training step and the import floor, in fresh processes,
    paired and alternated: the medians of each and the median of the pairs' differences."""
    first_overrides = _s12_run_overrides(fashion_dir)
    first_overrides += [
        *("--trainer.limit_train_batches", "1"),
        *("--trainer.enable_progress_bar", "false"),
    ]
    # Fresh processes, alternating (the order swapping every pair), median of the pairs (3;
    # 1 in --quick): a cold start is the noisiest figure here, and the import floor is its
    # reference. The run picks its threads as a user's run does (no --threads).
    first_steps, import_floors = [], []
    pairs = 1 if quick else START_UP_PAIRS
    for pair in range(pairs):
        log(f"start-up pair {pair + 1}/{pairs}: run -> first training step, import floor ...")
        for which in ("first", "import") if pair % 2 == 0 else ("import", "first"):
            if which == "first":
                first_steps.append(first_step_seconds("s1-mlp", first_overrides, uri, workdir))
            else:
                import_floors.append(import_floor_seconds(uri, workdir))
    differences = [f - i for f, i in zip(first_steps, import_floors, strict=True)]
    return {
        "pairs": pairs,
        "first_step_s": _median(first_steps),
        "import_floor_s": _median(import_floors),
        "first_step_minus_import_s": _median(differences),
        "differences_s": differences,
    }


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
    "first_step_minus_import_s": ("<=", 1.5),
    "s12_vs_floor": ("<=", 1.05),
    "tracking_share": ("<=", 0.03),
    "system_metrics_share": ("<=", 0.01),
}
#: The headline figures of --json: the targets, and the spread that goes with s12_vs_floor.
JSON_KEYS = (*TARGETS, "s12_vs_floor_spread")


def _verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return "(no target)"
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
    print(f"floor = {figures['floor_definition']}")
    print(figures["s12_network"])
    rounds = " ".join(f"{r:.3f}" for r in figures["s12"]["project_vs_floor_rounds"])
    print(
        f"S1.2 project / floor per round ({figures['s12']['rounds']} alternations): {rounds}; "
        f"median {figures['s12_vs_floor']:.3f}, spread {figures['s12_vs_floor_spread']:.3f}"
    )
    print(
        f"run -> first training step {figures['first_step_s']:.2f} s, of which importing "
        f"torch + lightning + mlflow and opening the store takes {figures['import_floor_s']:.2f} s"
        f" (medians of {figures['start_up']['pairs']} alternated pairs; median difference "
        f"{figures['first_step_minus_import_s']:.2f} s)"
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
