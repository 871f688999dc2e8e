"""Compare runs from the MLflow store in the terminal: one row per run, mean +- std per group.

    python -m experiments compare                                   # every FINISHED run
    python -m experiments compare --experiment fashion-mnist --group-by activation
    python -m experiments compare --study activation-s1-mlp --group-by model.net.activation
    python -m experiments compare --group-by tag.experiment --metric test/acc --metric test/f1
    python -m experiments compare --filter "params.model.optimizer = 'sgd'" --all-states
    python -m experiments compare --tag owner=ana --since 2d --status FINISHED,KILLED
    python -m experiments compare --kind evaluation          # evaluation runs only
    python -m experiments compare --study s3-one-factor-s1-scratch --metric val/acc

A one-factor study (`search s3`) shows one more table per factor: its values in order,
the other factors at the base point (whose run is a row of every table).

Each row names a run by its short id, name, start time (UTC) and status, followed by the
params whose values differ between the listed runs, then the metrics. Training runs only,
unless --kind says otherwise. `--study NAME` lists the study's trials (every state) with
its searched params and objective. `--group-by` takes a param key (`model.net.activation`),
a unique suffix of one (`activation`) or `tag.NAME`. The standard deviation is the sample
one (n - 1); a group of one run shows no spread. Runs without the metric are listed but
left out of the groups.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence

from experiments.errors import ConfigError, Refused
from experiments.reports.stats import mean_std
from experiments.tracking import health, labels, store
from experiments.training import preflight

#: the kinds of run `--kind` selects (tag `kind`; a run without it is a training run)
KINDS = ("training", "evaluation", "activation-summary", "worked", "all")
#: at most this many differing params are shown as columns (the rest are named below)
MAX_PARAM_COLUMNS = 6


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


def fetch_runs(client, experiment: str | None, filter_string: str):
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments())
            raise ValueError(f"experiment {experiment!r} not found; the store has: {names}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    names = {e.experiment_id: e.name for e in experiments}
    runs, token = [], None
    while True:
        page = client.search_runs(
            list(names),
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            break
    return runs, names


def group_of(run, group_key: str | None) -> str:
    """The run's value of `group_key` (`params:KEY` or `tags:NAME`); "" when not grouping."""
    if group_key is None:
        return ""
    source, _, key = group_key.partition(":")
    return getattr(run.data, source).get(key, "(unset)")


def table(headers: list[str], body: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def group_table(runs, metrics: list[str], group_key: str) -> str:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)  # group -> runs' metrics
    for run in runs:
        groups[group_of(run, group_key)].append(run.data.metrics)
    body = []
    first = metrics[0]

    def order(item):
        values = [m[first] for m in item[1] if first in m]
        return -(mean_std(values)[0]) if values else math.inf

    for group, members in sorted(groups.items(), key=order):
        line = [group, str(len(members))]
        for metric in metrics:
            values = [m[metric] for m in members if metric in m]
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
    parent = study_parent(client, runs, study)
    if parent is None or "study.at" not in parent.data.tags:
        return ""
    at = {k: str(v) for k, v in json.loads(parent.data.tags["study.at"]).items()}
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


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--tag", action="append", metavar="KEY=VALUE", help="only runs with this tag, repeatable"
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="training",
        help="training runs (default), evaluation runs, S4 summaries, worked examples, or all",
    )
    parser.add_argument("--since", help="runs started since: an age (2d, 12h) or a date")
    parser.add_argument(
        "--status", help="comma-separated run states, e.g. FINISHED,KILLED (default FINISHED)"
    )
    parser.add_argument("--all-states", action="store_true", help="runs in every state")
    parser.add_argument("--limit", type=int, default=50, help="run rows to print (best first)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    return parser


def study_names(client) -> list[str]:
    """The names of the Optuna studies recorded in the store (their parent runs)."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    parents = client.search_runs(experiment_ids, "tags.study_role = 'parent'", max_results=1000)
    return sorted({r.data.tags.get("study_name", "") for r in parents} - {""})


def describe_param(name: str, spec: dict) -> str:
    """`lr: float 0.0001..0.1 log -> model.lr` from a study's stored space."""
    if spec.get("type") == "categorical":
        values = "|".join(str(c) for c in spec.get("choices", []))
    else:
        values = f"{spec.get('low')}..{spec.get('high')}{' log' if spec.get('log') else ''}"
    return f"{name}: {spec.get('type')} {values} -> {spec.get('target')}"


def study_parent(client, runs, study: str):
    """The parent run of the study of the trial runs `runs` (in their experiments), or None."""
    parents = client.search_runs(
        list({r.info.experiment_id for r in runs}),
        f"tags.study_name = '{study}' AND tags.study_role = 'parent'",
        max_results=1,
    )
    return parents[0] if parents else None


def study_header(client, runs, study: str) -> tuple[str, list[str]]:
    """The study's searched params and objective, from its parent run: (text, metrics)."""
    parent = study_parent(client, runs, study)
    searched = sorted(
        {k[len("trial.") :] for r in runs for k in r.data.params if k.startswith("trial.")}
    )
    objectives = ""
    if parent is not None:
        params = parent.data.params
        objectives = params.get("study.objectives", "")
        try:
            space = json.loads(params.get("study.space", "{}"))
            searched = [describe_param(name, spec) for name, spec in space.items()] or searched
        except ValueError:
            pass
    metrics = [f"objective/{o.split()[-1]}" for o in objectives.split(", ") if o]
    text = f"study {study}: objective {objectives or '?'}; searched " + ("; ".join(searched) or "?")
    return text, metrics


def selection(args, client) -> tuple[str, set[str] | None, dict[str, str]]:
    """(MLflow filter, states left to check here, tags) of the flags; ConfigError."""
    clauses = [args.filter] if args.filter else []
    if args.study:
        if args.study not in study_names(client) and not client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            f"tags.study_name = '{args.study}'",
            max_results=1,
        ):
            known = ", ".join(study_names(client)) or "none yet"
            raise ConfigError(f"--study {args.study!r}: no such study; the store has: {known}")
        clauses.append(f"tags.study_name = '{args.study}' AND tags.study_role = 'trial'")
    if args.all_states:
        states = None
    elif args.status:
        states = labels.parse_statuses(args.status)
    else:
        states = None if args.study else {"FINISHED"}  # a study's pruned trials are KILLED
    if args.since:
        clauses.append(f"attributes.start_time >= {labels.parse_moment('--since', args.since)}")
    if states == {"FINISHED"}:  # filtered by MLflow; other states here
        clauses.append("attributes.status = 'FINISHED'")
    return " AND ".join(clauses), states, labels.parse_tag_filter(args.tag)


def select_runs(runs, kind: str, states, wanted) -> list:
    """The fetched runs that match --kind, --status and --tag."""
    kept = []
    for run in runs:
        run_kind = run.data.tags.get("kind") or "training"
        if kind != "all" and run_kind != kind:
            continue
        if states is not None and run.info.status not in states:
            continue
        if labels.match_tags(run.data.tags, wanted):
            kept.append(run)
    return kept


def cell(value: str | None, width: int = 14) -> str:
    """A param value for a table cell: floats to 4 significant digits, long text cut."""
    if value is None:
        return "-"
    if "." in value or "e" in value.lower():
        with contextlib.suppress(ValueError):  # a number; text stays as it is
            value = f"{float(value):.4g}"
    return value if len(value) <= width else value[: width - 1] + "~"


def run_table(runs, names: dict[str, str], metrics: list[str], group_key, group_by, columns) -> str:
    headers = ["run", "name", "start (UTC)", "status", "experiment"]
    if group_by:
        headers.append(group_by)
    headers += [c.removeprefix("trial.") for c in columns] + metrics
    body = []
    for run in runs:
        info, data = run.info, run.data
        line = [labels.short_id(info.run_id), info.run_name or info.run_id[:8]]
        line += [labels.start_time(info.start_time), info.status]
        line.append(names.get(info.experiment_id, info.experiment_id))
        if group_by:
            line.append(group_of(run, group_key))
        line += [cell(data.params.get(c)) for c in columns]
        line += [f"{data.metrics[m]:.4f}" if m in data.metrics else "-" for m in metrics]
        body.append(line)
    return table(headers, body)


def param_columns(runs, study: bool) -> tuple[list[str], list[str]]:
    """(shown, left out) param keys: a study's searched `trial.*` params, else the params
    that differ between the runs (a run's config, not the study's bookkeeping)."""
    params = [r.data.params for r in runs]
    if study:
        keys = sorted({k for p in params for k in p if k.startswith("trial.")})
        return keys, []
    keys = [k for k in labels.differing(params) if not k.startswith(("trial.", "study."))]
    return keys[:MAX_PARAM_COLUMNS], keys[MAX_PARAM_COLUMNS:]


def fetch(args, client):
    """The selected runs and experiment names; ConfigError or MLflow's error on bad flags."""
    filter_string, states, wanted = selection(args, client)
    runs, names = fetch_runs(client, args.experiment, filter_string)
    return select_runs(runs, args.kind, states, wanted), names


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    metrics = args.metric or ["test/acc"]
    uri = store.resolve_tracking_uri(args.tracking_uri)
    try:  # a store of a kind MLflow has, answering, before a client is made on it
        preflight.check_store_kind(uri)
        health.check_tracking_server(uri)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db = store.sqlite_path(uri)
    if db is not None and not db.exists():
        print(f"error: no MLflow store at {db}; run an experiment first", file=sys.stderr)
        return 2
    client = store.client(uri)
    try:
        runs, names = fetch(args, client)
        header = None
        if args.study:
            header, objective_metrics = study_header(client, runs, args.study)
            metrics = args.metric or [*objective_metrics, "test/acc"]
        if not runs:
            print(f"{header}\n" if header else "", end="")
            print("no runs match")
            return 0
        params = set().union(*(r.data.params for r in runs))
        group_key = resolve_group_key(args.group_by, params) if args.group_by else None
    except ValueError as exc:  # ConfigError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # MLflow rejects a malformed --filter with its own message
        if type(exc).__name__ != "MlflowException":
            raise
        print(f"error: --filter: {exc}", file=sys.stderr)
        return 2
    if header:
        print(header)
    print_runs(runs, names, metrics, args, group_key)
    factors = factor_tables(client, runs, args.study, metrics) if args.study else ""
    if factors:
        print()
        print(factors)
    return 0


def print_runs(runs, names: dict[str, str], metrics: list[str], args, group_key) -> None:
    first = metrics[0]
    runs = sorted(
        runs, key=lambda r: (first not in r.data.metrics, -r.data.metrics.get(first, 0.0))
    )
    shown = runs[: args.limit]
    columns, left_out = param_columns(shown, bool(args.study))
    group_by = args.group_by if group_key else None
    print(run_table(shown, names, metrics, group_key, group_by, columns))
    if left_out:
        print(f"(more params differ: {', '.join(left_out)})")
    if len(runs) > len(shown):
        print(f"... {len(runs) - len(shown)} more runs (--limit)")
    if group_key:
        print()
        print(f"grouped by {args.group_by} ({group_key.replace(':', ' ')}):")
        print(group_table(runs, metrics, group_key))
    missing = sum(first not in r.data.metrics for r in runs)
    if missing:
        print(f"\n{missing} run(s) have no {first} and are left out of the statistics")
