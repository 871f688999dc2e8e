"""S4: train the two-layer MLP once per activation per seed, then log one summary run.

    python -m experiments compare-activations                        # relu, leaky_relu, swish, selu x 3 seeds
    python -m experiments compare-activations --activations all --seeds 5
    python -m experiments compare-activations --activations relu,selu --trainer.max_steps 200
    python -m experiments compare-activations --group-id act-... # finish an interrupted comparison
    python -m experiments compare-activations --run-name act-demo --tag owner=ana  # summary name; tags on all
    python -m experiments compare-activations --workers 2            # two worker processes

Every (activation, seed) pair is a normal tracked run of `s4-mlp` (extra flags are its
overrides), run as a grid study without pruning; the summary run's files and figures, and
how `--group-id` resumes an interrupted comparison: docs/tracking.md (activation comparison).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.reports.stats import mean_std
from experiments.seed_tasks import S4_REPORTED_ACTIVATIONS
from experiments.seed_tasks import S4_SUMMARY_KIND as SUMMARY_KIND
from experiments.tracking import labels
from experiments.tracking.store import metric_history

EXPERIMENT = "s4-mlp"
STUDY = "compare-activations"
DEFAULT_ACTIVATIONS = ("relu", "leaky_relu", "swish", "selu")

# Overrides this command sets itself for every run.
_OWNED_FLAGS = {
    "--model.activation": "--activations",
    "--seed": "--seeds",
    **{flag: "nothing: the comparison sets it" for flag in ("--grid", "--sampler", "--study-name")},
}


@dataclass
class ChildRun:
    activation: str
    seed: int
    run_id: str
    final_train_loss: float
    final_val_acc: float
    test_acc: float
    loss_curve: list[tuple[int, float]] = field(repr=False)
    val_acc_curve: list[tuple[int, float]] = field(repr=False)


@dataclass
class ActivationRow:
    activation: str
    runs: int
    loss_mean: float
    #: None for a single run (no sample spread)
    loss_std: float | None
    acc_mean: float
    acc_std: float | None
    run_ids: list[str]


def parse_activations(text: str) -> list[str]:
    """'relu,swish' -> ['relu', 'swish']; 'all' -> every registered activation.

    Raises ValueError naming the unknown names and the valid ones.
    """
    from models.activations import ACTIVATIONS, canonical_activation

    if text.strip().lower() == "all":
        return list(ACTIVATIONS)
    # 'SELU', 'Leaky ReLU', 'silu': the registry's names (models.activations).
    names = [canonical_activation(part.strip()) for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--activations is empty; give a comma-separated list or 'all'")
    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown:
        raise ValueError(
            f"--activations: unknown {', '.join(repr(n) for n in unknown)}; "
            f"valid: {', '.join(ACTIVATIONS)} (or 'all')"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"--activations: {', '.join(duplicates)} given more than once")
    return names


def read_child(client, run_id: str) -> ChildRun:
    """A finished child run's final numbers and curves, read back from MLflow."""
    run = client.get_run(run_id)
    # x = iterations done (MLflow step + 1): validation every 100 lands on 100, ..., 2000.
    loss = metric_history(client, run_id, "train/loss", step_offset=1)
    acc = metric_history(client, run_id, "val/acc", step_offset=1)
    return ChildRun(
        activation=run.data.tags.get("activation", run.data.params.get("model.activation", "?")),
        seed=int(run.data.tags.get("seed", run.data.params.get("seed", "0"))),
        run_id=run_id,
        final_train_loss=loss[-1][1] if loss else math.nan,
        final_val_acc=acc[-1][1] if acc else math.nan,
        test_acc=run.data.metrics.get("test/acc", math.nan),
        loss_curve=loss,
        val_acc_curve=acc,
    )


def summarize(children: list[ChildRun], activations: list[str]) -> list[ActivationRow]:
    rows = []
    for name in activations:
        mine = [c for c in children if c.activation == name]
        loss = mean_std([c.final_train_loss for c in mine])
        acc = mean_std([c.final_val_acc for c in mine])
        rows.append(ActivationRow(name, len(mine), *loss, *acc, [c.run_id for c in mine]))
    return rows


def mean_curve(
    curves: list[list[tuple[int, float]]],
) -> tuple[list[int], list[float], list[float | None]]:
    """Mean and std over seeds at each iteration (seeds share the schedule, so the steps);
    std None where only one seed has a point."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    stats = [mean_std(by_step[s]) for s in steps]
    return steps, [m for m, _ in stats], [s for _, s in stats]


def _pm(mean: float, std: float | None) -> str:
    """'mean ± std' for the markdown table; '-' in place of a std that does not exist."""
    return f"{mean:.4f} ± {'-' if std is None else f'{std:.4f}'}"


def _csv(header: list[str], rows: list[list]) -> str:
    """CSV text; floats as repr, None (a std that does not exist) as a blank cell."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def summary_csv(rows: list[ActivationRow]) -> str:
    header = [
        "activation",
        "runs",
        "final_train_loss_mean",
        "final_train_loss_std",
        "final_val_acc_mean",
        "final_val_acc_std",
        "run_ids",
    ]
    body = [
        [r.activation, r.runs, r.loss_mean, r.loss_std, r.acc_mean, r.acc_std, " ".join(r.run_ids)]
        for r in rows
    ]
    return _csv(header, body)


def runs_csv(children: list[ChildRun]) -> str:
    header = ["activation", "seed", "run_id", "final_train_loss", "final_val_acc", "test_acc"]
    body = [
        [c.activation, c.seed, c.run_id, c.final_train_loss, c.final_val_acc, c.test_acc]
        for c in sorted(children, key=lambda c: (c.activation, c.seed))
    ]
    return _csv(header, body)


def summary_markdown(rows: list[ActivationRow], seeds: int) -> str:
    lines = [
        "| activation | runs | final train loss (mean ± std) | final val acc (mean ± std) "
        "| seed task's loss / acc |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        seed = S4_REPORTED_ACTIVATIONS.get(r.activation)
        seed_text = f"{seed.train_loss:.2f} / {seed.val_acc:.3f}" if seed else "-"
        lines.append(
            f"| {r.activation} | {r.runs} | {_pm(r.loss_mean, r.loss_std)} "
            f"| {_pm(r.acc_mean, r.acc_std)} | {seed_text} |"
        )
    lines.append("")
    lines.append(
        f"Mean ± sample std over {seeds} seed(s) (- where a single run has no spread). "
        "The seed task's numbers come from 10-class colour images (likely CIFAR-10), ours "
        "from the data of these runs: compare the ranking, not the values."
    )
    return "\n".join(lines) + "\n"


def _colors(activations: list[str]) -> dict[str, object]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(activations)}


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, facecolor="white")


def plot_curves(children, activations, attr: str, ylabel: str, title: str, path: Path) -> None:
    """One line per activation: mean over seeds at each iteration, shaded +- std."""
    # matplotlib.figure.Figure directly, not pyplot: no global figure state, no GUI backend.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    colors = _colors(activations)
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for name in activations:
        curves = [getattr(c, attr) for c in children if c.activation == name]
        steps, mean, std = mean_curve(curves)
        if not steps:
            continue
        ax.plot(
            steps,
            mean,
            marker="o",
            markersize=3,
            color=colors[name],
            label=f"{name} (n={len(curves)})",
        )
        if all(s is None for s in std):
            continue  # a single seed: no band
        # Where one seed alone has a point there is no spread: the band narrows to the line.
        spread = [0.0 if s is None else s for s in std]
        lower = [m - s for m, s in zip(mean, spread, strict=True)]
        upper = [m + s for m, s in zip(mean, spread, strict=True)]
        ax.fill_between(steps, lower, upper, color=colors[name], alpha=0.2, linewidth=0)
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    _save(fig, path)


def plot_bars(rows: list[ActivationRow], path: Path) -> None:
    """Final validation accuracy per activation, error bars = std over seeds."""
    from matplotlib.figure import Figure

    names = [r.activation for r in rows]
    colors = _colors(names)
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    xs = list(range(len(rows)))
    means = [0.0 if math.isnan(r.acc_mean) else r.acc_mean for r in rows]
    # No std (a single run) draws a zero-height error bar and a label without a spread.
    stds = [0.0 if r.acc_std is None else r.acc_std for r in rows]
    ax.bar(xs, means, yerr=stds, capsize=6, color=[colors[n] for n in names], edgecolor="black")
    for x, r, m, s in zip(xs, rows, means, stds, strict=True):
        if r.runs == 0:
            label = "no run"
        elif r.acc_std is None:
            label = f"{m:.3f}"
        else:
            label = f"{m:.3f}\n± {s:.3f}"
        ax.annotate(
            label, (x, m + s), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=9
        )
    ax.set_xticks(xs, [f"{r.activation}\n(n={r.runs})" for r in rows])
    ax.set_ylabel("final validation accuracy")
    # Head room above the tallest bar for its two-line label, even at accuracy 1.0.
    top = max((m + s for m, s in zip(means, stds, strict=True)), default=1.0)
    ax.set_ylim(0, max(top, 0.1) * 1.18)
    ax.set_title("S4: final validation accuracy per activation (mean ± std over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def _summary_metrics(rows: list[ActivationRow], stamp: int) -> list:
    """`<activation>/<key>` metrics of the summary run; a nan mean or a missing std is left out."""
    from mlflow.entities import Metric

    metrics = []
    for r in rows:
        for key, value in (
            ("final_train_loss_mean", r.loss_mean),
            ("final_train_loss_std", r.loss_std),
            ("final_val_acc_mean", r.acc_mean),
            ("final_val_acc_std", r.acc_std),
        ):
            if value is not None and not math.isnan(value):
                metrics.append(Metric(f"{r.activation}/{key}", value, stamp, 0))
    return metrics


def _log_summary_figures(
    client, run_id: str, children: list[ChildRun], activations: list[str], rows
) -> None:
    """The two curve figures and the bar chart, under the summary run's figures/."""
    with tempfile.TemporaryDirectory() as tmp:
        for attr, ylabel, what, name in (
            ("loss_curve", "training loss (mean since previous point)", "training loss", "loss"),
            ("val_acc_curve", "validation accuracy", "validation accuracy", "val_acc"),
        ):
            title = f"S4: {what} per activation (mean ± std over seeds)"
            path = Path(tmp) / f"activation_{name}.png"
            plot_curves(children, activations, attr, ylabel, title, path)
        plot_bars(rows, Path(tmp) / "activation_bars.png")
        client.log_artifacts(run_id, tmp, "figures")


def log_summary(
    client,
    experiment_id: str,
    group_id: str,
    activations: list[str],
    seeds: int,
    overrides: list[str],
    children: list[ChildRun],
    run_name: str | None = None,
    user_tags: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Create the FINISHED summary run with its params, metrics, tables and figures; returns
    (run id, markdown table)."""
    from experiments.tracking import store

    rows = summarize(children, activations)
    markdown = summary_markdown(rows, seeds)
    tags = {
        "kind": SUMMARY_KIND,
        "task": "S4",
        "study": STUDY,
        "group_id": group_id,
        "source_experiment": EXPERIMENT,
        **store.environment_tags(),
        **(user_tags or {}),
    }
    name = run_name or f"activation-summary-{group_id}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    params = {
        "activations": ",".join(activations),
        "seeds": str(seeds),
        "experiment": EXPERIMENT,
        "overrides": " ".join(overrides) or "(none)",
        "child_runs": str(len(children)),
    }
    try:
        store.log_params(client, run_id, params)
        metrics = _summary_metrics(rows, run.info.start_time)
        if metrics:
            client.log_batch(run_id, metrics=metrics)
        client.log_text(run_id, summary_csv(rows), "activation_summary.csv")
        client.log_text(run_id, markdown, "activation_summary.md")
        client.log_text(run_id, runs_csv(children), "activation_runs.csv")
        _log_summary_figures(client, run_id, children, activations, rows)
    except BaseException as exc:
        client.set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id, markdown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments compare-activations",
        description="S4: train s4-mlp once per activation per seed, then log a summary run.",
        epilog="Other flags are overrides for s4-mlp, e.g. --trainer.max_steps 200 "
        "--data.data_dir D (see `python -m experiments run s4-mlp --help`).",
    )
    parser.add_argument(
        "--activations",
        default=",".join(DEFAULT_ACTIVATIONS),
        help=f"comma-separated names or 'all' (default {','.join(DEFAULT_ACTIVATIONS)})",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per activation (3)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--group-id",
        help="group of a previous comparison to complete: its finished runs are reused",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes on this host")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check every run's config, the Trainer, data and store; train nothing",
    )
    labels.add_label_flags(parser, "the summary run (default: activation-summary-GROUP)")
    return parser


def _check_args(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """The activations to compare; ValueError naming what is wrong with the flags."""
    activations = parse_activations(args.activations)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    for flag in overrides:
        key = flag.split("=", 1)[0]
        if key in _OWNED_FLAGS:
            raise ValueError(f"{key} is set by this command for each run; use {_OWNED_FLAGS[key]}")
    return activations


def study_plan(
    args: argparse.Namespace,
    activations: list[str],
    overrides: list[str],
    user_tags: dict[str, str],
):
    """The grid study activation x seed on s4-mlp: no pruning, no study report (the summary
    run is the comparison's report); ConfigError on a bad override."""
    import dataclasses

    from experiments.search.plan import make_plan

    argv = [
        "--grid",
        f"model.activation={','.join(activations)}",
        "--grid",
        f"seed={','.join(str(seed) for seed in range(args.seeds))}",
        "--base",
        EXPERIMENT,
        "--study-name",
        args.group_id,
        "--pruner",
        "none",
        "--trial-figures",  # each run's own figures (the W1 tiles) are part of the answer
        "--workers",
        str(args.workers),
        *(["--tracking-uri", args.tracking_uri] if args.tracking_uri else []),
        *overrides,
    ]
    plan = make_plan(argv)
    space = dataclasses.replace(plan.space, name=STUDY, description="S4 activation x seed")
    tags = {**user_tags, "group_id": args.group_id, "task": "S4"}
    return dataclasses.replace(
        plan, space=space, report=False, tags=tags, param_tags={"model.activation": "activation"}
    )


def _check(plan) -> int:
    """`--check`: every run's config resolved (done), and a run's checks; nothing created."""
    from experiments.training import console, preflight

    console.quiet_libraries(console.echo_warnings)
    found = preflight.check_run(plan.base_config, plan.tracking_uri)
    print(f"ok: {len(plan.points)} runs of {EXPERIMENT} checked")
    for line in found:
        print(f"  {line}")
    print("nothing was created (--check)")
    return 0


def study_children(plan, client) -> list[ChildRun]:
    """The finished trials' runs, by activation then seed, read back from MLflow."""
    from optuna.trial import TrialState

    from experiments.search.study import open_study

    study = open_study(plan, create=False)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done.sort(key=lambda t: (t.params["model.activation"], t.params["seed"]))
    return [read_child(client, t.user_attrs["mlflow_run_id"]) for t in done]


def main(argv: Sequence[str]) -> int:
    import os

    from experiments.errors import Refused
    from experiments.search.launch import WORKER_ENV, run_plan
    from experiments.tracking import store

    argv = list(argv)
    args, overrides = build_parser().parse_known_args(argv)
    if args.group_id is None:  # this process leads: the workers get the same group
        args.group_id = f"act-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        argv += ["--group-id", args.group_id]
    try:
        activations = _check_args(args, overrides)
        run_name, user_tags = labels.check_run_name(args.run_name), labels.parse_tags(args.tag)
        # Every config is resolved before the first run: a bad override stops here, no run.
        plan = study_plan(args, activations, overrides, user_tags)
        if args.check:
            return _check(plan)
    except (ValueError, Refused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get(WORKER_ENV):  # an extra worker process of this comparison
        return run_plan(plan, argv, "compare-activations")
    uri = plan.tracking_uri
    print(
        f"compare-activations: {len(activations)} activation(s) x {args.seeds} seed(s) = "
        f"{len(plan.points)} runs of {EXPERIMENT}, group_id {args.group_id}, store {uri}",
        flush=True,
    )
    # Interrupted, run_plan prints how to complete the comparison (the same command with its
    # --group-id: finished pairs are kept, interrupted ones trained again) and returns
    # 128 + the signal.
    code = run_plan(plan, argv, "compare-activations")
    if code == 2 or code > 128:
        return code
    client = store.client(uri)
    children = study_children(plan, client)
    if not children:
        print("error: no run finished; nothing to summarize", file=sys.stderr)
        return 1
    experiment_id = client.get_run(children[0].run_id).info.experiment_id
    summary_id, markdown = log_summary(
        client,
        experiment_id,
        args.group_id,
        activations,
        args.seeds,
        overrides,
        children,
        run_name,
        user_tags,
    )
    print()
    print(markdown)
    print(f"Summary run {summary_id} (FINISHED, kind={SUMMARY_KIND}, group_id {args.group_id})")
    print(f"Open the UI: {store.ui_command(uri)}")
    missing = len(plan.points) - len(children)
    if missing:
        print(f"{missing} run(s) failed: see the study's trials", file=sys.stderr)
    return 1 if missing else code
