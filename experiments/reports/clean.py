"""`python -m experiments clean`: delete runs you select, with their checkpoints and artifacts.

    python -m experiments clean RUN_ID RUN_ID              # runs by id (or 8-character prefix)
    python -m experiments clean --study lr-s1-mlp          # a study: parent, trials, Optuna study
    python -m experiments clean --status FAILED,KILLED --older-than 7d
    python -m experiments clean --experiment fashion-mnist --older-than 2026-12-01 --yes
    python -m experiments clean --tag owner=ana --yes

The selectors combine (a run must match each one given); a selected parent run takes its
nested runs along. The list of what goes, and the space it frees, is printed first; the
command asks before deleting unless --yes (without a terminal to ask on it refuses). A
RUNNING run is never touched (nor a study whose parent run is RUNNING): `doctor` marks the
runs of dead processes first.

Deletion is MLflow's own: `delete_run`, then `mlflow gc` removes the rows and artifacts for
good, and the run's logged model unless a registered model version uses it (then it is
kept, and said). The local checkpoint folder goes too. `--study NAME` also deletes the study
from its Optuna storage and its folder under mlruns/studies/; runs of a study deleted any
other way leave the study's trial records in Optuna (it is kept, and said).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from experiments.errors import ConfigError
from experiments.tracking import labels, store

BUSY = ("RUNNING", "SCHEDULED")


@dataclass
class Selection:
    runs: list = field(default_factory=list)  # to delete
    kept: list[str] = field(default_factory=list)  # why something selected stays
    studies: list[str] = field(default_factory=list)  # whole studies to delete
    models: list = field(default_factory=list)  # logged models to delete
    bytes_by_run: dict[str, int] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments clean",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="run ids or 8-char prefixes")
    parser.add_argument("--study", help="an Optuna study: its runs and the study itself")
    parser.add_argument("--older-than", help="runs started before: an age (7d, 12h) or a date")
    parser.add_argument("--status", help="comma-separated states, e.g. FAILED,KILLED")
    parser.add_argument("--experiment", help="runs of this MLflow experiment (e.g. fashion-mnist)")
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="runs with this tag")
    parser.add_argument("--yes", action="store_true", help="delete without asking")
    parser.add_argument("--storage", help="the study's Optuna storage (default: the store's)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    return parser


def folder_size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def local_path(uri: str | None) -> Path | None:
    """The folder of a file:// (or plain path) artifact URI; None for remote ones."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path))


def all_runs(client, experiment: str | None) -> list:
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise ConfigError(f"--experiment {experiment!r}: not found; the store has: {names}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while ids:
        page = client.search_runs(ids, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    return runs


def by_ids(runs: list, wanted: list[str]) -> set[str]:
    """The full ids of `wanted` (ids or prefixes); ConfigError naming an unknown or
    ambiguous one."""
    found = set()
    for text in wanted:
        matches = [r.info.run_id for r in runs if r.info.run_id.startswith(text.lower())]
        if len(matches) != 1 or len(text) < 6:
            why = "matches no run" if not matches else "is too short or matches several runs"
            raise ConfigError(f"run id {text!r} {why}; `python -m experiments compare` lists ids")
        found.add(matches[0])
    return found


def matching(args, runs: list) -> list:
    """The runs every given selector matches (before children and RUNNING runs)."""
    before = labels.parse_moment("--older-than", args.older_than) if args.older_than else None
    states = labels.parse_statuses(args.status)
    wanted_tags = labels.parse_tag_filter(args.tag)
    ids = by_ids(runs, args.run_ids) if args.run_ids else None
    if args.study:
        names = {r.data.tags.get("study_name") for r in runs} - {None}
        if args.study not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ConfigError(f"--study {args.study!r}: no such study; the store has: {known}")
    kept = []
    for run in runs:
        tags = run.data.tags
        if ids is not None and run.info.run_id not in ids:
            continue
        if args.study and tags.get("study_name") != args.study:
            continue
        if before is not None and (run.info.start_time or 0) >= before:
            continue
        if states is not None and run.info.status not in states:
            continue
        if labels.match_tags(tags, wanted_tags):
            kept.append(run)
    return kept


def select(args, client, uri: str) -> Selection:
    runs = all_runs(client, args.experiment)
    chosen = {r.info.run_id: r for r in matching(args, runs)}
    sel = Selection()
    busy_parents = {i for i, r in chosen.items() if r.info.status in BUSY}
    for run in runs:  # a selected parent takes its nested runs along
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent in chosen and parent not in busy_parents:
            chosen.setdefault(run.info.run_id, run)
    if args.study:
        parents = [r for r in runs if r.data.tags.get("study_name") == args.study]
        if any(r.info.status in BUSY for r in parents if r.data.tags.get("study_role") == "parent"):
            sel.kept.append(f"study {args.study} is running: kept, with all its runs")
            return sel
        sel.studies.append(args.study)
    for run_id, run in chosen.items():
        if run.info.status in BUSY:
            sel.kept.append(f"{labels.short_id(run_id)} {run.info.run_name}: RUNNING, kept")
            continue
        sel.runs.append(run)
        size = folder_size(store.checkpoint_dir(uri, run_id))
        artifacts = local_path(run.info.artifact_uri)
        sel.bytes_by_run[run_id] = size + (folder_size(artifacts) if artifacts else 0)
    select_models(client, sel)
    return sel


def select_models(client, sel: Selection) -> None:
    """The logged models of the deleted runs, unless a registered version uses one."""
    run_ids = {r.info.run_id for r in sel.runs}
    experiments = sorted({r.info.experiment_id for r in sel.runs})
    if not experiments:
        return
    for model in client.search_logged_models(experiments):
        if model.source_run_id not in run_ids:
            continue
        versions = client.search_model_versions(f"run_id = '{model.source_run_id}'")
        used = [
            f"{v.name} v{v.version}" for v in versions if v.source == f"models:/{model.model_id}"
        ]
        if used:
            sel.kept.append(f"models:/{model.model_id}: registered as {', '.join(used)}, kept")
            continue
        sel.models.append(model)
        folder = local_path(model.artifact_location)
        if folder is not None:
            root = folder.parent if folder.name == "artifacts" else folder
            sel.bytes_by_run[model.source_run_id] += folder_size(root)


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def describe(sel: Selection) -> None:
    if sel.runs:
        print(f"to delete: {len(sel.runs)} run(s), their artifacts and checkpoints")
    for run in sorted(sel.runs, key=lambda r: r.info.start_time or 0):
        size = megabytes(sel.bytes_by_run.get(run.info.run_id, 0))
        print(
            f"  {labels.short_id(run.info.run_id)}  {run.info.run_name:<28}  "
            f"{labels.start_time(run.info.start_time)}  {run.info.status:<8}  {size}"
        )
    for model in sel.models:
        print(f"  models:/{model.model_id} (logged model of run {model.source_run_id[:8]})")
    for study in sel.studies:
        print(f"  Optuna study {study} (its storage records and mlruns/studies/{study}/)")
    for line in sel.kept:
        print(f"kept: {line}")
    total = sum(sel.bytes_by_run.values())
    if sel.runs or sel.studies:
        print(f"frees {megabytes(total)}")


def confirmed(args, count: int) -> bool | None:
    """True to go on, False when the user said no, None when there is no one to ask."""
    if args.yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        return None
    answer = input(f"Delete these {count} run(s) for good? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def gc(uri: str, run_ids: list[str], model_ids: list[str]) -> None:
    """`mlflow gc`: the deleted runs' (and models') rows and artifacts, for good."""
    if store.sqlite_path(uri) is None:
        print(
            "note: the runs are marked deleted on the server; to free their space run "
            f"`mlflow gc --backend-store-uri DATABASE --run-ids {','.join(run_ids)}` there"
        )
        return
    from mlflow.cli import gc as gc_command  # MLflow's `mlflow gc`, run in this process

    args = ["--backend-store-uri", uri, "--tracking-uri", uri]
    if run_ids:
        args += ["--run-ids", ",".join(run_ids)]
    if model_ids:
        args += ["--logged-model-ids", ",".join(model_ids)]
    gc_command.main(args, prog_name="mlflow gc", standalone_mode=False)


def delete(client, uri: str, sel: Selection, storage: str) -> None:
    for run in sel.runs:
        client.delete_run(run.info.run_id)
    for model in sel.models:
        client.delete_logged_model(model.model_id)
    run_ids = [r.info.run_id for r in sel.runs]
    gc(uri, run_ids, [m.model_id for m in sel.models])
    for run in sel.runs:
        shutil.rmtree(store.checkpoint_dir(uri, run.info.run_id), ignore_errors=True)
        folder = local_path(run.info.artifact_uri)
        if folder is not None:  # gc removes `<run>/artifacts`; the run's empty folder too
            with contextlib.suppress(OSError):
                folder.parent.rmdir()
    for study in sel.studies:
        delete_study(study, storage, uri)


def delete_study(name: str, storage_url: str, uri: str) -> None:
    import optuna

    from experiments.search.storage import open_storage

    if "://" not in storage_url and not Path(storage_url).exists():
        print(f"note: no Optuna storage at {storage_url}; study {name} was only in MLflow")
        return
    storage = open_storage(storage_url)
    if name in optuna.study.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)
        print(f"deleted Optuna study {name} from {store.redact(storage_url)}")
    shutil.rmtree(store.local_root(uri) / "studies" / name, ignore_errors=True)


def studies_left(sel: Selection) -> list[str]:
    """Studies some of whose trial runs were deleted while the study itself is kept."""
    names = {r.data.tags.get("study_name") for r in sel.runs} - {None}
    return sorted(names - set(sel.studies))


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    uri = store.resolve_tracking_uri(args.tracking_uri)
    db = store.sqlite_path(uri)
    try:
        selectors = (args.run_ids, args.study, args.older_than, args.status, args.tag)
        if not any(selectors) and not args.experiment:
            raise ConfigError(
                "name what to delete: RUN_ID ..., --study NAME, --older-than AGE, "
                "--status STATES, --experiment NAME or --tag KEY=VALUE"
            )
        if db is not None and not db.exists():
            raise ConfigError(f"no MLflow store at {db}; nothing to delete")
        from experiments.search.storage import default_storage

        storage = args.storage or default_storage(store.local_root(uri))
        client = store.client(uri)
        sel = select(args, client, uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    describe(sel)
    if not sel.runs and not sel.studies:
        print("nothing to delete")
        return 0
    answer = confirmed(args, len(sel.runs))
    if answer is None:
        print("error: no terminal to ask on: pass --yes to delete", file=sys.stderr)
        return 2
    if not answer:
        print("nothing deleted")
        return 1
    delete(client, uri, sel, storage)
    freed = megabytes(sum(sel.bytes_by_run.values()))
    print(f"deleted {len(sel.runs)} run(s); freed {freed}")
    for name in studies_left(sel):
        print(
            f"study {name} is kept in its Optuna storage (its trials name deleted runs); "
            f"delete it with: python -m experiments clean --study {name}"
        )
    return 0
