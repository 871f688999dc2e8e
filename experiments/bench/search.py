"""Search benchmark: Optuna worker throughput and what pruning saves, measured in one run.

    python -m experiments bench search            # full measurement (tens of minutes)
    python -m experiments bench search --quick    # CI: proves the benchmark works
    python -m experiments bench search --quick --json   # one JSON object with the figures
    python -m experiments bench search --load --postgres postgresql://USER@HOST/DB
                                                  # 8 workers x 40 trials, journal and PostgreSQL

Everything runs the real command (`python -m experiments search lr ...`) in fresh
temporary stores, on a real Fashion-MNIST subset (the Debian dataset; the synthetic
writer's data when it is missing), base s1-mlp:

1. Throughput: the same unpruned study with 1 worker, then with 2 workers. Trials per
   minute = trials / (last trial end - first trial start), read from the Optuna journal,
   so process start-up and the final plots are not counted; the command's wall time is
   printed too. Target: 2 workers >= 1.6x the trials per minute of 1, on 2 free cores.
2. Pruning: the same study (same sampler seed, same trials) without and with the pruner.
   Epochs spent and best val/acc of each. Target: the pruned study's best val/acc within
   0.3 points (0.003) of the unpruned one's, with <= 40% of its epochs.
3. Fixed cost per trial: a trial's wall time from Optuna's ask to its tell, minus the
   seconds of its training and validation epochs (the trial's `epochs_s`, from the
   Trainer's epoch hooks), median over the trials of the 1-worker studies: what every
   trial pays besides its epochs (run set-up, test, outputs). Target: <= 0.5 s.

`--load` measures instead the full load of issue 22: 8 workers x 40 one-epoch trials on the
journal file and (with `--postgres URL`, an empty database) on PostgreSQL, trials per
minute beside 1 worker's, and checks that exactly 40 trials ended COMPLETE or PRUNED, each
number once. `--load-workers` and `--load-trials` shrink it.

Figures on a shared or busy machine are noisy: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class StudyFigures:
    trials: int
    span_s: float  # first trial start -> last trial end
    wall_s: float  # the whole command
    epochs: int
    best: float
    pruned: int
    #: per finished trial: ask -> tell seconds minus its epochs' seconds
    fixed_costs: list[float]

    @property
    def per_minute(self) -> float:
        return 60.0 * self.trials / self.span_s if self.span_s > 0 else float("nan")


def data_overrides(root: Path) -> tuple[list[str], str]:
    """Real Fashion-MNIST subset if installed, else the synthetic one; and its label."""
    common = [
        "--data.download",
        "false",
        "--data.val_size",
        "5000",
        "--trainer.limit_train_batches",
        "60",  # 60 x 64 = 3,840 training images per epoch
    ]
    if any(FASHION_SYSTEM_DIR.glob("*ubyte*")):
        return common, f"real Fashion-MNIST ({FASHION_SYSTEM_DIR}), 3,840 train/epoch, 5,000 val"
    from datamodules.synthetic import write_fashion_mnist

    folder = write_fashion_mnist(root / "fashion", n_train=8000, n_test=1000)
    label = "synthetic Fashion-MNIST (real data not installed), 3,840 train/epoch, 5,000 val"
    return [*common, "--data.data_dir", str(folder)], label


def run_study(
    folder: Path,
    overrides: list[str],
    *,
    trials: int,
    epochs: int,
    workers: int,
    pruner: str,
    storage: str | None = None,
    name: str = "bench",
) -> StudyFigures:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.trial import TrialState

    folder.mkdir(parents=True)
    journal = storage or str(folder / "journal.log")
    cmd = [
        sys.executable,
        "-m",
        "experiments",
        "search",
        "lr",
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--pruner",
        pruner,
        "--study-name",
        name,
        "--storage",
        journal,
        "--tracking-uri",
        f"sqlite:///{folder}/mlflow.db",
        "--trainer.max_epochs",
        str(epochs),
        *overrides,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"search failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    opened = journal if "://" in journal else JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name=name, storage=opened)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if len(finished) != trials or len({t.number for t in finished}) != trials:
        raise RuntimeError(f"{name}: {len(finished)} trials finished, {trials} asked for")
    span = (
        max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    ).total_seconds()
    return StudyFigures(
        trials=len(finished),
        span_s=span,
        wall_s=wall,
        epochs=sum(int(t.user_attrs.get("epochs", 0)) for t in finished),
        best=study.best_value,
        pruned=sum(t.state == TrialState.PRUNED for t in finished),
        fixed_costs=[fixed_cost(t) for t in finished],
    )


def fixed_cost(trial) -> float:
    """Seconds from the trial's ask (its start) to its tell (its end) outside its epochs."""
    span = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return span - float(trial.user_attrs.get("epochs_s", 0.0))


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments bench search", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small studies (CI)")
    parser.add_argument("--pruner", choices=("median", "hyperband"), default="median")
    parser.add_argument("--load", action="store_true", help="8 workers x 40 trials (issue 22)")
    parser.add_argument("--postgres", help="--load on this empty PostgreSQL database too")
    parser.add_argument("--load-workers", type=int, default=8)
    parser.add_argument("--load-trials", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.load:
        return load(args)
    if not args.json:
        measure(args)
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds only the JSON object
        figures = measure(args)
    print(json.dumps(figures))
    return 0


def measure(args) -> dict:
    """Run the studies, print the figures as they come; the headline figures."""
    speed_trials, speed_epochs = (4, 1) if args.quick else (12, 3)
    prune_trials, prune_epochs = (6, 3) if args.quick else (20, 8)

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        overrides, data_label = data_overrides(root)
        print(
            f"search benchmark{' (--quick)' if args.quick else ''}: lr study on s1-mlp, {data_label}"
        )
        print(f"machine: {os.cpu_count()} cores; load average before: {load_average()}")

        print(
            f"\n1. throughput: {speed_trials} unpruned trials x {speed_epochs} epochs", flush=True
        )
        speed = {}
        for workers in (1, 2):
            speed[workers] = f = run_study(
                root / f"workers{workers}",
                overrides,
                trials=speed_trials,
                epochs=speed_epochs,
                workers=workers,
                pruner="none",
            )
            print(
                f"   {workers} worker(s): {f.trials} trials in {f.span_s:.1f} s = "
                f"{f.per_minute:.2f} trials/min (command wall time {f.wall_s:.1f} s; "
                f"load {load_average()})",
                flush=True,
            )
        ratio = speed[2].per_minute / speed[1].per_minute
        print(f"   ratio 2/1 workers: {ratio:.2f}x (target >= 1.6x)")

        print(
            f"\n2. pruning ({args.pruner}): {prune_trials} trials x up to {prune_epochs} epochs, "
            "same sampler seed",
            flush=True,
        )
        full = run_study(
            root / "unpruned",
            overrides,
            trials=prune_trials,
            epochs=prune_epochs,
            workers=1,
            pruner="none",
        )
        pruned = run_study(
            root / "pruned",
            overrides,
            trials=prune_trials,
            epochs=prune_epochs,
            workers=1,
            pruner=args.pruner,
        )
        for label, f in (("unpruned", full), ("pruned", pruned)):
            print(
                f"   {label:<8}: {f.epochs} epochs, {f.pruned} trials pruned, best val/acc "
                f"{f.best:.4f} ({f.span_s:.0f} s)"
            )
        share = pruned.epochs / full.epochs
        points = 100 * (full.best - pruned.best)
        print(
            f"   pruned/unpruned epochs: {share:.0%} (target <= 40%); best val/acc difference: "
            f"{points:+.2f} points (unpruned - pruned; target <= 0.3)"
        )
        costs = [c for f in (speed[1], full, pruned) for c in f.fixed_costs]
        fixed = statistics.median(costs)
        print(
            f"\n3. fixed cost per trial (ask -> tell minus its epochs), median of the "
            f"{len(costs)} trials of the 1-worker studies: {fixed:.2f} s (target <= 0.5 s)"
        )
        print(f"\nload average after: {load_average()}")
    return {
        "fixed_cost_per_trial_s": round(fixed, 3),
        "trials_per_min_1_worker": round(speed[1].per_minute, 2),
        "trials_per_min_2_workers": round(speed[2].per_minute, 2),
        "workers_ratio": round(ratio, 2),
        "pruned_epoch_share": round(share, 3),
        "best_val_acc_unpruned_minus_pruned_points": round(points, 2),
        "quick": args.quick,
        "load_average_after": load_average(),
        "fixed_costs_s": [round(c, 3) for c in costs],
    }


def load(args) -> int:
    """The full load: `--load-workers` x `--load-trials` one-epoch trials per storage, beside
    1 worker on a quarter of the trials; trials per minute from the studies' own times."""
    storages = {"journal": None}
    if args.postgres:
        storages["postgresql"] = args.postgres
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = Path(tmp)
        overrides, data_label = data_overrides(root)
        print(f"search load benchmark: lr study on s1-mlp, 1 epoch per trial, {data_label}")
        print(f"machine: {os.cpu_count()} cores; load average before: {load_average()}")
        for label, storage in storages.items():
            for workers, trials in (
                (1, max(1, args.load_trials // 4)),
                (args.load_workers, args.load_trials),
            ):
                name = f"load-{workers}w"
                f = run_study(
                    root / f"{label}-{workers}",
                    overrides,
                    trials=trials,
                    epochs=1,
                    workers=workers,
                    pruner="median",
                    storage=storage,
                    name=name,
                )
                print(
                    f"   {label}, {workers} worker(s): {f.trials} trials, each number once, "
                    f"in {f.span_s:.1f} s = {f.per_minute:.2f} trials/min (command wall time "
                    f"{f.wall_s:.1f} s; load {load_average()})",
                    flush=True,
                )
    return 0
