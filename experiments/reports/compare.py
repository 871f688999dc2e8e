"""Compare runs from the MLflow store in the terminal: one row per run, mean +- std per group.

    python -m experiments compare                                   # every FINISHED run
    python -m experiments compare --experiment fashion-mnist --group-by activation
    python -m experiments compare --study activation-s1-mlp --group-by model.net.activation
    python -m experiments compare --group-by tag.experiment --metric test/acc --metric test/f1
    python -m experiments compare --filter "params.model.optimizer = 'sgd'" --all-states
    python -m experiments compare --study s3-one-factor-s1-scratch --metric val/acc

A one-factor study (`search s3`) shows one more table per factor: its values in order,
the other factors at the base point (whose run is a row of every table).

`--group-by` takes a param key (`model.net.activation`), a unique suffix of one
(`activation`) or `tag.NAME`. The standard deviation is the sample one (n - 1); a group of
one run shows no spread. Runs without the metric are listed but left out of the groups.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.reports.stats import mean_std
from experiments.tracking import store


@dataclass
class RunRow:
    run_id: str
    name: str
    experiment: str
    status: str
    group: str
    metrics: dict[str, float]


def resolve_group_key(key: str, params: set[str]) -> str:
    """`activation` -> `params:model.activation` when exactly one param ends with it."""
    if key.startswith("tag."):
        return f"tags:{key[4:]}"
    if key in params:
        return f"params:{key}"
    matches = sorted(p for p in params if p.endswith(f".{key}"))
    # A study's `trial.lr` repeats `model.lr`: the config key is the one to group by.
    config = [m for m in matches if not m.startswith(("trial.", "study."))]
    matches = config or matches
    if len(matches) == 1:
        return f"params:{matches[0]}"
    if matches:
        raise ValueError(f"--group-by {key!r} is ambiguous: {', '.join(matches)}")
    known = sorted(params)
    more = f" (and {len(known) - 40} more)" if len(known) > 40 else ""
    raise ValueError(
        f"--group-by {key!r} is not a param of the selected runs (nor tag.NAME); "
        f"params include: {', '.join(known[:40])}{more}"
    )


def fetch_runs(client, experiment: str | None, filter_string: str, all_states: bool):
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments())
            raise ValueError(f"experiment {experiment!r} not found; the store has: {names}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    names = {e.experiment_id: e.name for e in experiments}
    clauses = [filter_string] if filter_string else []
    if not all_states:
        clauses.append("attributes.status = 'FINISHED'")
    runs, token = [], None
    while True:
        page = client.search_runs(
            list(names),
            filter_string=" AND ".join(clauses),
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            break
    return runs, names


def build_rows(runs, names: dict[str, str], group_key: str | None, metrics: list[str]):
    rows = []
    for run in runs:
        if group_key is None:
            group = ""
        else:
            source, _, key = group_key.partition(":")
            group = getattr(run.data, source).get(key, "(unset)")
        rows.append(
            RunRow(
                run_id=run.info.run_id,
                name=run.info.run_name or run.info.run_id[:8],
                experiment=names.get(run.info.experiment_id, run.info.experiment_id),
                status=run.info.status,
                group=group,
                metrics={m: run.data.metrics[m] for m in metrics if m in run.data.metrics},
            )
        )
    return rows


def table(headers: list[str], body: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def group_table(rows: list[RunRow], metrics: list[str]) -> str:
    groups: dict[str, list[RunRow]] = defaultdict(list)
    for row in rows:
        groups[row.group].append(row)
    body = []
    first = metrics[0]

    def order(item):
        values = [r.metrics[first] for r in item[1] if first in r.metrics]
        return -(mean_std(values)[0]) if values else math.inf

    for group, members in sorted(groups.items(), key=order):
        line = [group, str(len(members))]
        for metric in metrics:
            values = [r.metrics[metric] for r in members if metric in r.metrics]
            if not values:
                line += ["-", "-"]
                continue
            mean, std = mean_std(values)
            spread = "" if std is None else f" +- {std:.4f}"
            line += [
                f"{mean:.4f}{spread} (n={len(values)})",
                f"{min(values):.4f}..{max(values):.4f}",
            ]
        body.append(line)
    headers = ["group", "runs"]
    for metric in metrics:
        headers += [f"{metric} mean +- std", "min..max"]
    return table(headers, body)


def factor_tables(client, runs, study: str, metrics: list[str]) -> str:
    """One table per factor of a one-factor study (its parent run's `study.at` tag)."""
    parents = client.search_runs(
        list({r.info.experiment_id for r in runs}),
        filter_string=f"tags.study_name = '{study}' AND tags.study_role = 'parent'",
        max_results=1,
    )
    if not parents or "study.at" not in parents[0].data.tags:
        return ""
    at = {k: str(v) for k, v in json.loads(parents[0].data.tags["study.at"]).items()}
    out = []
    for factor in at:
        others = {k: v for k, v in at.items() if k != factor}
        mine = [
            r
            for r in runs
            if all(r.data.params.get(f"trial.{k}") == v for k, v in others.items())
            and f"trial.{factor}" in r.data.params
        ]
        mine.sort(key=lambda r: _sortable(r.data.params[f"trial.{factor}"]))
        body = [
            [r.data.params[f"trial.{factor}"], r.info.run_name or r.info.run_id[:8]]
            + [f"{r.data.metrics[m]:.4f}" if m in r.data.metrics else "-" for m in metrics]
            for r in mine
        ]
        where = ", ".join(f"{k}={v}" for k, v in others.items())
        out.append(f"factor {factor} ({where}):\n" + table([factor, "run", *metrics], body))
    return "\n\n".join(out)


def _sortable(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experiment", help="MLflow experiment name (default: all)")
    parser.add_argument("--group-by", help="param key, unique param suffix, or tag.NAME")
    parser.add_argument(
        "--metric", action="append", help="metric to show, repeatable (default: test/acc)"
    )
    parser.add_argument("--study", help="only the trial runs of this Optuna study")
    parser.add_argument("--filter", default="", help="extra MLflow search filter")
    parser.add_argument("--all-states", action="store_true", help="also KILLED/FAILED runs")
    parser.add_argument("--limit", type=int, default=50, help="run rows to print (best first)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    args = parser.parse_args(argv)
    metrics = args.metric or ["test/acc"]
    uri = store.resolve_tracking_uri(args.tracking_uri)
    db = store.sqlite_path(uri)
    if db is not None and not db.exists():
        print(f"error: no MLflow store at {db}; run an experiment first", file=sys.stderr)
        return 2
    filter_string = args.filter
    if args.study:
        study = f"tags.study_name = '{args.study}' AND tags.study_role = 'trial'"
        filter_string = f"{filter_string} AND {study}" if filter_string else study
    client = store.client(uri)
    try:
        runs, names = fetch_runs(client, args.experiment, filter_string, args.all_states)
        if not runs:
            print("no runs match")
            return 0
        params = set().union(*(r.data.params for r in runs))
        group_key = resolve_group_key(args.group_by, params) if args.group_by else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # MLflow rejects a malformed --filter with its own message
        if type(exc).__name__ != "MlflowException":
            raise
        print(f"error: --filter: {exc}", file=sys.stderr)
        return 2
    rows = build_rows(runs, names, group_key, metrics)
    first = metrics[0]
    rows.sort(key=lambda r: (first not in r.metrics, -r.metrics.get(first, 0.0)))
    shown = rows[: args.limit]
    headers = ["run", "experiment", "status"]
    if group_key:
        headers.append(args.group_by)
    headers += metrics
    body = []
    for row in shown:
        line = [row.name, row.experiment, row.status]
        if group_key:
            line.append(row.group)
        line += [f"{row.metrics[m]:.4f}" if m in row.metrics else "-" for m in metrics]
        body.append(line)
    print(table(headers, body))
    if len(rows) > len(shown):
        print(f"... {len(rows) - len(shown)} more runs (--limit)")
    if group_key:
        print()
        print(f"grouped by {args.group_by} ({group_key.replace(':', ' ')}):")
        print(group_table(rows, metrics))
    factors = factor_tables(client, runs, args.study, metrics) if args.study else ""
    if factors:
        print()
        print(factors)
    missing = sum(first not in r.metrics for r in rows)
    if missing:
        print(f"\n{missing} run(s) have no {first} and are left out of the statistics")
    return 0
