"""Thread counts side by side: every fixed count, the default (its probe included) and
`--threads adaptive`, quiet, beside a busy process, and with a neighbour that arrives late.

    python -m experiments bench threads                 # 3 rounds of everything: under 30 min
    python -m experiments bench threads --quick         # 3 rounds of the targets: under 8 min
    python -m experiments bench threads --json          # the figures as one JSON object
    python -m experiments bench threads --models cnn_s13   # one model (mlp512, lenet_b4, cnn_s13)
    python -m experiments bench threads --rounds 5      # more rounds on a noisy machine

Measured on 2 cores (AMD EPYC): see experiments/docs/benchmarks.md#threads-per-model-and-torchcompile
for the times of both modes.

Three models, each the catalog experiment's model and optimizer (`s1-mlp`: the S1.2 MLP
784-512-10 at batch 64; `s0-cnn`: LeNet at batch 4; `s1-cnn`: the S1.3 CNN at batch 64),
trained by Lightning for 2 epochs of a fixed number of batches (`MODELS`: 500, 500 and 80;
random inputs of the dataset's shape: the speed does not depend on the pixels), with no
validation, logger, checkpoints or progress bar, so the seconds are training and the
thread choice. For each: the seconds of every fixed count (1, 2, 4, ... the cores), of the
default (`threads.for_run`, the run path's own choice: the probe's time is inside the
measured seconds) and of `--threads adaptive` (its probe at every epoch included), in
three conditions:

- quiet: nothing else started by the bench (the machine's load average is printed);
- busy: one CPU-bound process (a Python spin loop the bench starts and stops) the whole time;
- late: the same process, started when the first epoch ends.

`--quick` runs only what the targets compare: the fixed counts and the default, quiet and
busy. A round runs every variant once per condition, in a rotated order. The figures are
each variant's FASTEST run of the rounds: on a shared virtual machine identical runs differ
by up to 1.9x (the host's other work only ever adds time), so the fastest run is the
variant's own time, as `timeit` takes it; the medians are in the JSON too.
`default_vs_best_quiet` is the default's seconds over the better fixed count's, quiet;
`..._busy` beside the busy process (targets: at most 1.10 quiet and 1.15 busy, for every
model); `..._late`, and the same for adaptive.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from types import SimpleNamespace

#: key -> (catalog experiment, what it is, batches per epoch)
MODELS = {
    "mlp512": ("s1-mlp", "S1.2 MLP 784-512-10, batch 64", 500),
    "lenet_b4": ("s0-cnn", "LeNet (S0.3), batch 4", 500),
    "cnn_s13": ("s1-cnn", "S1.3 CNN, batch 64", 80),
}
EPOCHS = 2
ROUNDS = 3
CONDITIONS = ("quiet", "busy", "late")
TARGETS = {"quiet": 1.10, "busy": 1.15}
#: --quick: the conditions the targets name, and no `--threads adaptive`
QUICK_CONDITIONS = tuple(TARGETS)
#: The busy process: it says when it spins, so a neighbour that "starts after the first
#: epoch" is busy from the second epoch's first step (and its thread-choice re-check).
#: It ends by itself when the bench's process is gone (killed, not only interrupted).
SPIN = (
    "import os, sys\nparent = os.getppid()\nsys.stdout.write('x')\nsys.stdout.flush()\n"
    "while os.getppid() == parent:\n    for _ in range(200000):\n        pass"
)
#: A fixed count still running at this many times the fastest variant so far (in its
#: condition) is stopped: its seconds are then a lower bound (`cut`), which is enough to
#: know it is not the better count (two threads beside a busy process can be 10x slower;
#: identical runs differ by 1.9x at most), so later rounds do not run it again.
CUT_FACTOR = 3.0
#: A fixed count that took this much longer than another fixed count in the same round and
#: condition is not run in later rounds either: the S1.3 CNN's two threads beside the busy
#: process, 2x one thread's 17 s, would take a third of `--quick` again and again. Back to
#: back, identical runs differed by up to 1.6x on the VM of experiments/docs/benchmarks.md
#: (the MLP on two threads: 2.46 and 3.92 s), so less than that could drop the better count.
SETTLED = 1.8


class Neighbour:
    """One busy process (a Python spin loop), started and stopped by the bench."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is None:
            self.process = subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE)
            self.process.stdout.read(1)  # spinning

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            self.process = None


def _late_callback(neighbour: Neighbour):
    import lightning as L

    class StartAfterFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 0:
                neighbour.start()

    return StartAfterFirstEpoch()


def _cut_callback(limit_s: float | None, started: list[float]):
    import lightning as L

    class StopWhenTooSlow(L.Callback):
        cut = False

        def on_train_batch_end(self, trainer, *args) -> None:
            if limit_s is not None and time.perf_counter() - started[0] > limit_s:
                self.cut = trainer.should_stop = True

    return StopWhenTooSlow()


def _built(experiment: str, threads: str | None, batches: int):
    """(config, model, stand-in data) of `experiment`, seeded: every variant starts alike."""
    import lightning as L
    import torch

    from experiments.training.config import parse

    # The run's length as the Trainer below has it: the probe's budget is a share of it.
    overrides = ["--trainer.max_epochs", str(EPOCHS), "--trainer.limit_train_batches", str(batches)]
    overrides += [] if threads is None else ["--threads", threads]
    cfg = parse(experiment, overrides)
    L.seed_everything(cfg.seed, verbose=False)
    model, data = cfg.instantiate()
    generator = torch.Generator().manual_seed(0)
    n = data.batch_size * batches
    x = torch.randn(n, *data.input_shape, generator=generator)
    y = torch.randint(0, data.num_classes, (n,), generator=generator)
    return cfg, model, SimpleNamespace(train_x=x, train_y=y, batch_size=data.batch_size)


def run_variant(
    experiment: str, variant: str, batches: int, late: Neighbour | None, limit_s: float | None
) -> dict:
    """Seconds of one variant (a fixed count, "default" or "adaptive"): its thread choice and
    2 epochs of training; with `late`, that neighbour starts after the first epoch. A fixed
    count still running after `limit_s` is stopped (`cut`: its seconds are a lower bound)."""
    import lightning as L

    from datamodules.tensor_loader import TensorBatchLoader
    from experiments.training import threads

    requested = {"default": None, "adaptive": threads.ADAPTIVE}.get(variant, variant)
    cfg, model, data = _built(experiment, requested, batches)
    loader = TensorBatchLoader(data.train_x, data.train_y, data.batch_size, shuffle=True)
    extra = [] if late is None else [_late_callback(late)]
    started = [time.perf_counter()]
    fixed = variant not in ("default", "adaptive")
    cut = _cut_callback(limit_s if fixed else None, started)
    started[0] = time.perf_counter()
    choice = threads.for_run(cfg, model, data, cap=threads.available_cores())
    adaptive = threads.callbacks(choice, data)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        callbacks=[*adaptive, *extra, cut],
    )
    with threads.using(choice.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no validation loop here, on purpose
        trainer.fit(model, train_dataloaders=loader)
    seconds = time.perf_counter() - started[0]
    schedule = adaptive[0].schedule if adaptive else [(e, choice.threads) for e in range(EPOCHS)]
    return {"seconds": seconds, "threads": [n for _, n in schedule], "cut": cut.cut}


def measure_model(
    key: str, rounds: int, log, conditions: Sequence[str] = CONDITIONS, adaptive: bool = True
) -> dict:
    """Every variant of one model in every condition, `rounds` times (rotated order); a
    fixed count stopped in a round (`CUT_FACTOR`) or far slower than another (`SETTLED`) is
    not run again in its condition."""
    from experiments.training import threads

    experiment, what, batches = MODELS[key]
    fixed = [str(n) for n in threads.candidates(threads.available_cores())]
    variants = [*fixed, "default", *(["adaptive"] if adaptive else [])]
    runs: dict = {c: {v: [] for v in variants} for c in conditions}
    counts: dict = {c: {v: [] for v in variants if not v.isdigit()} for c in conditions}
    cuts: dict = {c: [] for c in conditions}
    fastest_of: dict = {c: None for c in conditions}
    settled: dict = {c: set() for c in conditions}  # not run again: cut, or far slower
    neighbour = Neighbour()
    for round_ in range(rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for condition in conditions:
            if condition == "busy":
                neighbour.start()
            finished = {}  # this round's fixed counts that ran to the end: their seconds
            try:
                fastest = fastest_of[condition]  # the fastest so far, any round
                for variant in (v for v in order if v not in settled[condition]):
                    late = neighbour if condition == "late" else None
                    limit = None if fastest is None else CUT_FACTOR * fastest
                    result = run_variant(experiment, variant, batches, late, limit)
                    if condition == "late":
                        neighbour.stop()
                    if not result["cut"]:
                        fastest = min(result["seconds"], fastest or result["seconds"])
                        fastest_of[condition] = fastest
                        if variant in fixed:
                            finished[variant] = result["seconds"]
                    else:
                        cuts[condition].append(variant)
                        settled[condition].add(variant)
                    runs[condition][variant].append(result["seconds"])
                    if variant in counts[condition]:
                        counts[condition][variant].append(result["threads"])
                    log(
                        f"[{key}] round {round_ + 1}/{rounds} {condition:<5} {variant:<8} "
                        f"{result['seconds']:7.2f} s threads {result['threads']}"
                        + (" (stopped: slower than the limit)" if result["cut"] else "")
                    )
            finally:
                neighbour.stop()
            settled[condition] |= far_slower(finished)
    return figures(key, what, batches, fixed, runs, counts, cuts)


def far_slower(seconds: dict[str, float]) -> set[str]:
    """The fixed counts of one round (count -> seconds) at least `SETTLED` times the fastest."""
    fastest = min(seconds.values(), default=0.0)
    return {n for n, s in seconds.items() if s >= SETTLED * fastest}


def figures(
    key: str, what: str, batches: int, fixed: list[str], runs: dict, counts: dict, cuts: dict
) -> dict:
    """One model's figures from its runs (seconds per condition and variant, in order; a
    stopped run is its variant's last). `seconds`: each variant's fastest run to the end
    (a stopped variant's: its lower bound, if it never finished); the better fixed count is
    the fastest of those that finished a run; `median_seconds`: the medians of all runs."""

    def finished(c: str, v: str) -> list[float]:
        return runs[c][v][:-1] if v in cuts[c] else runs[c][v]

    seconds = {c: {v: min(finished(c, v) or s) for v, s in runs[c].items()} for c in runs}
    out = {
        "experiment": MODELS[key][0],
        "model": what,
        "batches_per_epoch": batches,
        "epochs": EPOCHS,
        "fixed_counts": [int(n) for n in fixed],
        "seconds": seconds,
        "median_seconds": {c: {v: statistics.median(s) for v, s in runs[c].items()} for c in runs},
        "runs": runs,
        "threads_chosen": counts,
        "cut": cuts,
    }
    for condition in runs:
        whole = [n for n in fixed if finished(condition, n)] or fixed
        best = min(whole, key=lambda n, c=condition: seconds[c][n])
        out.setdefault("best_fixed", {})[condition] = int(best)
        medians = out["median_seconds"][condition]
        for variant in counts[condition]:
            ratio = seconds[condition][variant] / seconds[condition][best]
            out[f"{variant}_vs_best_{condition}"] = ratio
            # the same on the medians, for comparison with runs before 2026-12-07 (evening)
            out.setdefault("median_ratios", {})[f"{variant}_vs_best_{condition}"] = (
                medians[variant] / medians[best]
            )
    return out


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def table(report: dict) -> str:
    fixed = next(iter(report["models"].values()))["fixed_counts"]
    head = "".join(f"{f'{n} thr s':>9}" for n in fixed)
    lines = [
        f"bench threads: {report['cores']} core(s), torch {report['torch']}, {report['epochs']} "
        f"epochs per run, {report['rounds']} round(s) (each variant's fastest run), "
        f"{report['date']}",
        f"load average (1, 5, 15 min) before {report['load_before']}, after {report['load_after']}",
        f"{'model':<31} {'batches':>7} {'condition':<9}{head} {'default s':>10} {'chose':>6} "
        f"{'adaptive s':>11} {'default/best':>12} {'adaptive/best':>13}",
    ]
    for key, row in report["models"].items():
        for condition, seconds in row["seconds"].items():
            # '>': a lower bound, the count's only run was stopped (a stopped count is not
            # run again, so one that finished a run before shows that run)
            bound = {n for n in row["cut"][condition] if len(row["runs"][condition][n]) == 1}
            cells = "".join(
                f"{('>' if str(n) in bound else '') + format(seconds[str(n)], '.2f'):>9}"
                for n in fixed
            )
            chose = "/".join(str(t[0]) for t in row["threads_chosen"][condition]["default"])
            adaptive = ("-", "-")  # --quick runs no adaptive variant
            if "adaptive" in seconds:
                adaptive = (
                    f"{seconds['adaptive']:.2f}",
                    f"{row[f'adaptive_vs_best_{condition}']:.2f}",
                )
            lines.append(
                f"{key + ' ' + row['model']:<31.31} {row['batches_per_epoch']:>7} {condition:<9}"
                f"{cells} {seconds['default']:>10.2f} {chose:>6} {adaptive[0]:>11} "
                f"{row[f'default_vs_best_{condition}']:>12.2f} {adaptive[1]:>13}"
            )
    lines.append(
        "targets for the default: default/best at most "
        f"{TARGETS['quiet']:.2f} quiet and {TARGETS['busy']:.2f} busy; "
        + ("met for every model" if report["targets_met"] else "NOT met: see the rows above")
    )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments bench threads", description=__doc__
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only what the targets compare: the fixed counts and the default, quiet and busy",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        metavar="N",
        help=f"rounds of every variant (default {ROUNDS}): more on a noisy machine",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        help="measure only these models (default: all three)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    import lightning  # noqa: F401 (imported before its loggers are quieted: it sets them up)
    import torch

    from experiments.training import console, threads

    console.quiet_libraries()
    conditions = QUICK_CONDITIONS if args.quick else CONDITIONS

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = {
        "cores": threads.available_cores(),
        "torch": torch.__version__,
        "epochs": EPOCHS,
        "rounds": args.rounds,
        "quick": args.quick,
        "conditions": list(conditions),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": load_average(),
        "targets": TARGETS,
    }
    report["models"] = {
        key: measure_model(key, args.rounds, log, conditions, adaptive=not args.quick)
        for key in args.models
    }
    report["load_after"] = load_average()
    report["targets_met"] = all(
        row[f"default_vs_best_{c}"] <= limit
        for row in report["models"].values()
        for c, limit in TARGETS.items()
    )
    for key, row in report["models"].items():  # the headline figures, per model
        report[key] = {f"default_vs_best_{c}": row[f"default_vs_best_{c}"] for c in conditions}
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0
