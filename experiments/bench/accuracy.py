"""Accuracy benchmark: the Fashion-MNIST seed tasks at full length, against their targets.

    python -m experiments bench accuracy                       # S1.1, S1.2, S1.3, S2
    python -m experiments bench accuracy --tasks S1.3,S2 --tracking-uri sqlite:////tmp/acc/mlflow.db
    python -m experiments bench accuracy --quick               # 1 short epoch each (CI)
    python -m experiments bench accuracy --seed-settings       # the seeds' own settings

Each task's catalog experiment (s1-scratch, s1-mlp, s1-cnn, s2-cnn) goes through
`experiments.config.parse` and `experiments.run.run_experiment`, so every benchmark run is
an ordinary tracked MLflow run (tag `bench=accuracy`) with its config, metrics and best
checkpoint. The table puts the seed's bar, our target and the measured test accuracy side
by side, with epochs, wall time, hardware and library versions; for S2 the per-class test
accuracies sit next to the ones the seed reported.

`--quick` (1 epoch, a few batches) only proves that the command works: its accuracies say
nothing about the targets. `--seed-settings` runs experiments/configs/seed_settings/*.yaml instead of
the catalog: the settings the seed texts fixed, with our earlier defaults where they were open,
held to the seed's bar rather than to our target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.seed_tasks import S2_REPORTED_ACC, S2_REPORTED_CLASS_ACC, SEED_TASKS
from experiments.training.config import CONFIGS_DIR, ConfigError, ResolvedConfig, parse

SEED_SETTINGS_DIR = CONFIGS_DIR / "seed_settings"

#: MLflow tag that marks the runs of this benchmark.
BENCH_TAG = ("bench", "accuracy")


@dataclass(frozen=True)
class BenchTask:
    task: str  # seed task id (its bar and reported numbers: experiments.seed_tasks)
    experiment: str  # catalog name
    seed_settings: str  # file under experiments/configs/seed_settings/
    target: float  # what our defaults must reach
    note: str = ""  # printed under the table

    @property
    def bar(self) -> float:
        """The seed's own pass mark, or the overall accuracy it reported (S2)."""
        mark = SEED_TASKS[self.task].pass_mark
        assert mark is not None, f"{self.task} has neither a bar nor a reported accuracy"
        return mark


TASKS: dict[str, BenchTask] = {
    t.task: t
    for t in (
        BenchTask("S1.1", "s1-scratch", "s1-scratch-seed.yaml", 0.85),
        BenchTask("S1.2", "s1-mlp", "s1-mlp-seed.yaml", 0.88),
        BenchTask("S1.3", "s1-cnn", "s1-cnn-seed.yaml", 0.92, "target within 10 epochs"),
        BenchTask(
            "S2",
            "s2-cnn",
            "s2-cnn-seed.yaml",
            0.91,
            "seed bar = the overall accuracy the seed reported",
        ),
    )
}

# --quick: one epoch of a few batches and a small validation split, so the whole command
# runs in seconds on any data (the test set stays complete: it is cheap to evaluate).
QUICK_OVERRIDES = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "5",
    "--data.val_size",
    "100",
]
# The benchmark prints its own one line per epoch; Lightning's bars would bury the table.
QUIET_OVERRIDES = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


@dataclass
class Outcome:
    spec: BenchTask
    cfg: ResolvedConfig
    status: str = "not run"
    run_id: str = ""
    test_acc: float | None = None
    class_acc: dict[str, float] | None = None
    epochs: int = 0
    minutes: float = 0.0
    error: str = ""
    loads: tuple[float, ...] = ()
    #: the seed's own settings are held to the seed's bar, our defaults to our target
    seed_settings: bool = False

    @property
    def threshold(self) -> float:
        return self.spec.bar if self.seed_settings else self.spec.target

    @property
    def passed(self) -> bool:
        return self.test_acc is not None and self.test_acc >= self.threshold


def parse_tasks(text: str) -> list[BenchTask]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ConfigError(
            f"--tasks={text!r}: unknown task(s) {unknown or '(none given)'}; "
            f"allowed: {', '.join(TASKS)} (comma-separated)"
        )
    return [TASKS[t] for t in dict.fromkeys(names)]


def config_source(spec: BenchTask, seed_settings: bool) -> str:
    return str(SEED_SETTINGS_DIR / spec.seed_settings) if seed_settings else spec.experiment


def overrides_for(quick: bool, data_dir: str | None) -> list[str]:
    overrides = list(QUIET_OVERRIDES)
    if data_dir is not None:
        overrides += ["--data.data_dir", data_dir, "--data.download", "false"]
    if quick:
        overrides += QUICK_OVERRIDES
    return overrides


def _epoch_printer(label: str, max_epochs: int):
    """A callback printing one progress line per finished training epoch."""
    from lightning.pytorch.callbacks import Callback

    class EpochProgress(Callback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.epochs_done = 0
            # 1-minute load average at each epoch end: on a shared machine the wall
            # minutes only mean something next to how busy it was.
            self.loads: list[float] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # Validation has run by now, so val/acc of this epoch is in callback_metrics.
            self.epochs_done = trainer.current_epoch + 1
            self.loads.append(os.getloadavg()[0])
            metrics = trainer.callback_metrics
            parts = [
                f"{k} {float(metrics[k]):.4f}" for k in ("train/acc", "val/acc") if k in metrics
            ]
            minutes = (time.monotonic() - self.start) / 60
            print(
                f"  {label} epoch {self.epochs_done}/{max_epochs}  {'  '.join(parts)}  "
                f"({minutes:.1f} min)",
                flush=True,
            )

    return EpochProgress()


def run_one(outcome: Outcome, tracking_uri: str, quick: bool, seed_settings: bool) -> None:
    from experiments.training.runner import run_experiment

    spec, cfg = outcome.spec, outcome.cfg
    max_epochs = int(cfg.trainer.get("max_epochs") or 0)
    progress = _epoch_printer(spec.task, max_epochs)
    tags = {
        BENCH_TAG[0]: BENCH_TAG[1],
        "bench.quick": str(int(quick)),
        "bench.settings": "seed" if seed_settings else "catalog",
    }
    start = time.monotonic()
    try:
        result = run_experiment(
            cfg,
            tracking_uri,
            callbacks=[progress],
            tags=tags,
            run_name=f"bench-accuracy-{cfg.name}",
            verbose=False,
        )
    except ConfigError as exc:
        outcome.status, outcome.error = "config error", str(exc)
        return
    except Exception as exc:  # the run is marked FAILED in MLflow; go on with the next task
        outcome.status, outcome.error = "FAILED", f"{type(exc).__name__}: {exc}"
        return
    finally:
        outcome.minutes = (time.monotonic() - start) / 60
        outcome.epochs = progress.epochs_done
        outcome.loads = tuple(progress.loads)
    outcome.status, outcome.run_id = result.status, result.run_id
    outcome.test_acc = result.test_metrics.get("test/acc")
    prefix = "test/class_acc/"
    outcome.class_acc = {
        k[len(prefix) :]: v for k, v in result.test_metrics.items() if k.startswith(prefix)
    }


def environment() -> dict[str, str]:
    import lightning
    import torch

    from experiments.tracking.store import environment_tags

    return {
        "hardware": environment_tags()["hardware"],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "threads": str(torch.get_num_threads()),
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(outcomes: Sequence[Outcome], quick: bool) -> str:
    """Markdown table, one row per task (pasteable into experiments/docs/benchmarks.md as is)."""
    against = "bar" if any(o.seed_settings for o in outcomes) else "target"
    header = (
        f"| task | experiment | seed bar | target | test acc | vs {against} | epochs | wall min |"
    )
    lines = [header, _rule(header)]
    for o in outcomes:
        if o.test_acc is None:
            verdict = o.status
        elif quick:
            verdict = "n/a (quick)"
        else:
            verdict = "pass" if o.passed else f"FAIL ({o.test_acc - o.threshold:+.4f})"
        lines.append(
            f"| {o.spec.task} | {o.cfg.name} | {o.spec.bar:.2f} | >= {o.spec.target:.2f} | "
            f"{_fmt(o.test_acc)} | {verdict} | {o.epochs} | {o.minutes:.1f} |"
        )
    notes = [f"{o.spec.task}: {o.spec.note}" for o in outcomes if o.spec.note]
    if notes:
        lines += ["", "; ".join(notes) + "."]
    return "\n".join(lines)


def _rule(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def class_table(class_acc: dict[str, float], overall: float | None) -> str:
    """S2's per-class test accuracy (percent) beside the seed's reported numbers."""
    header = "| class | seed % | ours % | diff |"
    lines = [header, _rule(header)]
    rows = [*S2_REPORTED_CLASS_ACC.items(), ("overall", S2_REPORTED_ACC)]
    measured = {**class_acc, "overall": overall}
    for name, seed in rows:
        ours = measured.get(name)
        seed_pct = 100 * seed
        ours_pct = None if ours is None else 100 * ours
        diff = "-" if ours_pct is None else f"{ours_pct - seed_pct:+.1f}"
        lines.append(f"| {name} | {seed_pct:.0f} | {_fmt(ours_pct, 1)} | {diff} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments bench accuracy",
        description="Run the Fashion-MNIST seed tasks at full length and compare the test "
        "accuracy with the seed's bar and our target.",
    )
    parser.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"comma-separated subset of {','.join(TASKS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 epoch of 5 batches per task: proves the command works (CI), not the targets",
    )
    parser.add_argument(
        "--seed-settings",
        action="store_true",
        help="run experiments/configs/seed_settings/*.yaml (the seeds' own settings) instead of the "
        "catalog, and hold them to the seed's bar instead of our target",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--data-dir",
        help="Fashion-MNIST directory to use instead of the normal lookup (downloads disabled)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    from experiments.tracking import store

    args = build_parser().parse_args(list(argv))
    try:
        specs = parse_tasks(args.tasks)
        overrides = overrides_for(args.quick, args.data_dir)
        # Every config is parsed before anything runs: a typo fails in a second, not after
        # the first hour of training.
        outcomes = [
            Outcome(
                spec,
                parse(config_source(spec, args.seed_settings), overrides),
                seed_settings=args.seed_settings,
            )
            for spec in specs
        ]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uri = store.resolve_tracking_uri(args.tracking_uri)
    env = environment()
    started = dt.datetime.now().astimezone()
    mode = "quick (1 epoch, 5 batches)" if args.quick else "full length"
    print(
        f"Accuracy benchmark, {mode}, {'seed settings' if args.seed_settings else 'catalog'}: "
        f"{', '.join(s.task for s in specs)} -> {uri}",
        flush=True,
    )
    for i, outcome in enumerate(outcomes, 1):
        trainer = outcome.cfg.trainer
        print(
            f"[{i}/{len(outcomes)}] {outcome.spec.task} {outcome.cfg.name}: "
            f"{trainer.get('max_epochs')} epochs ...",
            flush=True,
        )
        run_one(outcome, uri, args.quick, args.seed_settings)
        acc = _fmt(outcome.test_acc)
        print(
            f"[{i}/{len(outcomes)}] {outcome.spec.task} {outcome.status}: test/acc {acc} "
            f"in {outcome.minutes:.1f} min (run {outcome.run_id or '-'})",
            flush=True,
        )
        if outcome.error:
            print(f"  error: {outcome.error}", file=sys.stderr)

    print()
    print(f"Date: {started:%Y-%m-%d %H:%M %Z}  store: {uri}")
    print(f"Hardware: {env['hardware']} (torch threads {env['threads']})")
    print(f"Versions: torch {env['torch']}, lightning {env['lightning']}")
    loads = [load for o in outcomes for load in o.loads]
    if loads:
        print(
            f"Load average (1 min) at epoch ends: {min(loads):.1f} to {max(loads):.1f} "
            f"(median {statistics.median(loads):.1f}) on {os.cpu_count()} cores"
        )
    print()
    print(results_table(outcomes, args.quick))
    for outcome in outcomes:
        if outcome.spec.task == "S2" and outcome.class_acc:
            print()
            print("S2 per-class test accuracy (seed's reported numbers beside ours):")
            print()
            print(class_table(outcome.class_acc, outcome.test_acc))
    if args.quick:
        print("\n--quick: accuracies after 5 batches only prove that the command works.")
    failed = [o for o in outcomes if o.status != "FINISHED"]
    missed = [] if args.quick else [o for o in outcomes if not o.passed]
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
