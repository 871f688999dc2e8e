"""What a finished study leaves on its MLflow parent run (plots, leaderboards, best config,
metrics): docs/search.md (What MLflow holds).

A multi-objective study's "best" trial is the Pareto-optimal one with the best first
objective (val/acc for S3); plots show the first objective.
"""

from __future__ import annotations

import csv
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from experiments.tracking import store as tracking_store

STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}


def best_trial(plan, study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    first = plan.space.objectives[0]
    candidates = study.best_trials if plan.space.multi_objective else complete
    pick = max if first.direction == "maximize" else min
    return pick(candidates, key=lambda t: t.values[0])


def leaderboard_rows(plan, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    first = plan.space.objectives[0]
    sign = -1 if first.direction == "maximize" else 1

    def order(t: FrozenTrial):
        value = t.values[0] if t.values else None
        return (STATE_ORDER.get(t.state, 3), value is None, sign * (value or 0.0), t.number)

    rows = []
    for rank, t in enumerate(sorted(trials, key=order), start=1):
        row: dict[str, Any] = {"rank": rank, "trial": t.number, "state": t.state.name}
        for i, objective in enumerate(plan.space.objectives):
            row[objective.metric] = t.values[i] if t.values else ""
        row["epochs_trained"] = t.user_attrs.get("epochs", "")
        row["seconds"] = ""
        if t.datetime_complete and t.datetime_start:
            row["seconds"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        for param in plan.space.params:
            row[f"param.{param.name}"] = t.params.get(param.name, "")
        row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id", "")
        row["retry_of"] = t.user_attrs.get("retry_of", "")
        row["note"] = t.user_attrs.get("error") or t.user_attrs.get("failed_because", "")
        rows.append(row)
    return rows


def factor_tables(plan, trials: list[FrozenTrial]) -> dict[str, list[dict[str, Any]]]:
    """One-factor study: {factor: leaderboard rows of its points, by the factor's value}."""
    rows = leaderboard_rows(plan, trials)
    by_number = {t.number: t for t in trials}
    tables = {}
    for param in plan.space.params:
        order = {repr(v): i for i, v in enumerate(param.grid_values())}
        mine = [
            row
            for row in rows
            if row["state"] in ("COMPLETE", "PRUNED")
            and param.name in plan.space.factor_of(by_number[row["trial"]].params)
        ]
        mine.sort(key=lambda row: order.get(repr(row[f"param.{param.name}"]), len(order)))
        tables[param.name] = mine
    return tables


def print_factor_tables(plan, tables: dict[str, list[dict[str, Any]]]) -> None:
    metrics = [o.metric for o in plan.space.objectives]
    for name, rows in tables.items():
        others = ", ".join(f"{k}={v}" for k, v in plan.space.at.items() if k != name)
        print(f"\nfactor {name} ({others}):")
        print("  " + "  ".join([f"{name:>10}", *(f"{m:>10}" for m in metrics), "trial"]))
        for row in rows:
            cells = [f"{row[m]:>10.4f}" if row[m] != "" else f"{'-':>10}" for m in metrics]
            print("  " + "  ".join([f"{row[f'param.{name}']!s:>10}", *cells, str(row["trial"])]))


def write_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def draw_plots(plan, study, folder: Path) -> dict[str, str]:
    """PNG per plot; returns {plot: reason} for plots that could not be drawn."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials": said below
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    first = plan.space.objectives[0]
    target: dict[str, Any] = {"target_name": first.metric}
    if plan.space.multi_objective:
        target["target"] = lambda t: t.values[0]
    plots = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, **target),
        "param_importances": lambda: ovm.plot_param_importances(study, **target),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study, **target),
        "slice": lambda: ovm.plot_slice(study, **target),
    }
    if plan.space.multi_objective:
        names = [o.metric for o in plan.space.objectives]
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=names)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    skipped = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in plots.items():
        if name == "param_importances" and complete < 2:
            skipped[name] = f"needs 2 COMPLETE trials, the study has {complete}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                draw()
        except Exception as exc:  # an empty or degenerate study: the others still draw
            skipped[name] = f"{type(exc).__name__}: {exc}"
            plt.close("all")
            continue
        figure = plt.gcf()  # the one figure the plot drew, on one Axes or a grid of them
        figure.set_size_inches(max(figure.get_size_inches()[0], 8), 5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # colorbar axes and tight_layout
            figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=100)
        plt.close("all")
    return skipped


def report_study(plan, study, parent_run_id: str) -> Path | None:
    """Log plots, leaderboard and best config on the parent run; print the summary."""
    client = tracking_store.client(plan.tracking_uri)
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    best = best_trial(plan, study)
    best_path = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        skipped = draw_plots(plan, study, folder / "plots")
        for name, reason in skipped.items():
            print(f"  plot {name} skipped: {reason}")
        if any((folder / "plots").iterdir()):
            client.log_artifacts(parent_run_id, str(folder / "plots"), "plots")
        client.log_text(parent_run_id, write_csv(leaderboard_rows(plan, trials)), "leaderboard.csv")
        tables = factor_tables(plan, trials) if plan.space.at else {}
        for name, table in tables.items():
            client.log_text(parent_run_id, write_csv(table), f"leaderboard_{name}.csv")
        if best is not None:
            values = plan.space.config_values(best.params)
            # The thread count the best trial ran on (its worker measured it): part of
            # what makes `run --config best_config.yaml` repeat that trial.
            threads = _recorded_threads(client, best)
            cfg = plan.runnable_config({**values, **({"threads": threads} if threads else {})})
            text = cfg.as_yaml()
            client.log_text(parent_run_id, text, "best_config.yaml")
            study_dir = tracking_store.local_root(plan.tracking_uri) / "studies" / plan.study_name
            best_path = study_dir / "best_config.yaml"
            best_path.parent.mkdir(parents=True, exist_ok=True)
            best_path.write_text(text)
    metrics = {
        "trials/complete": counts[TrialState.COMPLETE],
        "trials/pruned": counts[TrialState.PRUNED],
        "trials/failed": counts[TrialState.FAIL],
        "trials/epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials),
    }
    if best is not None:
        for objective, value in zip(plan.space.objectives, best.values, strict=True):
            metrics[f"best/{objective.metric}"] = value
        client.set_tag(parent_run_id, "best_trial", str(best.number))
        client.set_tag(parent_run_id, "best_run_id", best.user_attrs.get("mlflow_run_id", ""))
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, float(value))

    print(
        f"\nstudy {plan.study_name}: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed; "
        f"{metrics['trials/epochs']} epochs"
    )
    print_factor_tables(plan, tables)
    if best is None:
        print("no COMPLETE trial yet: no best config")
    else:
        values = ", ".join(
            f"{o.metric} {v:.4f}" for o, v in zip(plan.space.objectives, best.values, strict=True)
        )
        print(f"best trial {best.number}: {values}  params {best.params}")
        print(f"best config: python -m experiments run --config {best_path}")
    print(f"MLflow parent run {parent_run_id}; UI: {tracking_store.ui_command(plan.tracking_uri)}")
    return best_path


def _recorded_threads(client, trial) -> int | str | None:
    """The `threads` param of a trial's MLflow run: a count, "adaptive", or None."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return None
    value = client.get_run(run_id).data.params.get("threads")
    if value is None or value == "None":
        return None
    return int(value) if value.isdigit() else value
