"""Check that the store, the storage locations and the data are usable; mark orphaned runs.

    python -m experiments doctor                       # the embedded store in ./mlruns
    python -m experiments doctor --tracking-uri http://127.0.0.1:5000 --data-dir data
    python -m experiments doctor --dry-run             # report orphaned runs, change nothing

Each check prints one line, `ok`, `warn` or `FAIL`, with what was found. A run left
RUNNING by a process that no longer exists on this machine (killed, crashed, rebooted)
is marked FAILED with `failure_reason=orphaned`; interrupted runs that still have a
readable `last.ckpt` are listed with the command that resumes them.
Exit code: 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from experiments.tracking import store

#: How many interrupted runs have their checkpoint opened and listed (newest first).
RESUMABLE_SHOWN = 20


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def line(self, level: str, what: str, detail: str) -> None:
        if level == "FAIL":
            self.failures += 1
        print(f"{level:<4}  {what:<22} {detail}", flush=True)


def check_store(report: Report, uri: str):
    """Reachability and a real query; returns an MlflowClient or None."""
    from experiments.tracking import health

    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        report.line("warn", "tracking store", f"{uri}: no store yet (the first run creates it)")
        return None
    try:
        health.check_tracking_server(uri)
        client = store.client(uri)
        experiments = client.search_experiments()
    except Exception as exc:
        report.line("FAIL", "tracking store", f"{uri}: {' '.join(str(exc).split())[:400]}")
        return None
    report.line("ok", "tracking store", f"{uri} ({len(experiments)} experiments)")
    return client


def _writable(folder: Path) -> str | None:
    """None if a file can be created in `folder` (or its nearest existing parent)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing}: not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"probe")
    except OSError as exc:
        return f"{exc.filename or folder}: {exc.strerror or exc}"
    return None


def check_storage(report: Report, uri: str, client) -> None:
    """The local checkpoint folder and every experiment's artifact location."""
    folder = store.local_root(uri) / "checkpoints"
    problem = _writable(folder)
    detail = problem or f"{folder.resolve()} is writable"
    report.line("FAIL" if problem else "ok", "checkpoint folder", detail)
    if client is None:
        return
    for experiment in client.search_experiments():
        location = experiment.artifact_location
        parsed = urlparse(location)
        if parsed.scheme in ("", "file"):
            problem = _writable(Path(parsed.path if parsed.scheme else location))
            level, detail = ("FAIL", problem) if problem else ("ok", f"{location} is writable")
        elif parsed.scheme == "mlflow-artifacts":
            level, detail = "ok", f"{location} (served by the server)"
        else:
            level, detail = "warn", f"{location} ({parsed.scheme}) not checked here"
        report.line(level, "artifact store", f"{experiment.name}: {detail}")


def check_runs(report: Report, uri: str, client, dry_run: bool) -> None:
    """Mark orphaned RUNNING runs; list live ones and resumable interrupted ones."""
    from experiments import errors
    from experiments.tracking import health
    from experiments.training import checkpoints
    from experiments.training.interrupts import resume_command

    orphans = health.mark_orphaned_runs(
        client, found_by=f"`experiments doctor` (process {os.getpid()})", dry_run=dry_run
    )
    for run in orphans:
        tags = run.data.tags
        verb = "would mark" if dry_run else "marked"
        report.line(
            "warn",
            "orphaned run",
            f"{run.info.run_id} ({tags.get('experiment', '?')}): process "
            f"{tags.get(health.PID_TAG)} on {tags.get(health.HOST_TAG)} is gone; {verb} FAILED",
        )
    marked = {run.info.run_id for run in orphans}
    running = [r for r in health.running_runs(client) if r.info.run_id not in marked]
    for run in running:
        state = health.process_state(run.data.tags)
        detail = (
            f"process {run.data.tags.get(health.PID_TAG)} is alive"
            if state == "alive"
            else "owner unknown (no process tags, or another host): not checked"
        )
        report.line(
            "ok" if state == "alive" else "warn", "running run", f"{run.info.run_id}: {detail}"
        )
    if not orphans and not running:
        report.line("ok", "running runs", "none left RUNNING")

    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return
    interrupted = client.search_runs(
        experiment_ids,
        filter_string="attributes.status != 'FINISHED' and attributes.status != 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=RESUMABLE_SHOWN,
    )
    for run in interrupted:
        checkpoint = store.checkpoint_dir(uri, run.info.run_id) / "last.ckpt"
        if not checkpoint.is_file():
            continue
        try:
            state = checkpoints.read_checkpoint(checkpoint, for_training=True)
        except errors.CheckpointError as exc:
            report.line("FAIL", "checkpoint", str(exc))
            continue
        report.line(
            "ok",
            "resumable run",
            f"{run.info.run_id} ({run.info.status}, epoch {state['epoch']}): "
            + resume_command(run.info.run_id, uri),
        )


def check_data(report: Report, data_dir: str | None) -> None:
    """Each dataset is found and parses (no download is attempted)."""
    from datamodules import CIFAR100SuperclassDataModule, FashionMNISTDataModule

    modules = {
        # val_size=0: only finding and parsing the files is checked, whatever their size.
        "Fashion-MNIST": FashionMNISTDataModule(data_dir=data_dir, download=False, val_size=0),
        "CIFAR-100": CIFAR100SuperclassDataModule(
            data_dir=data_dir or "data", download=False, val_size=0
        ),
    }
    for name, module in modules.items():
        try:
            module.setup("fit")
        except FileNotFoundError as exc:
            lines = str(exc).splitlines()
            where = lines[1].strip(" -") if len(lines) > 1 else ""
            report.line(
                "warn", f"data {name}", f"not found: {where} (a run will try to download it)"
            )
        except ValueError as exc:  # DataFormatError: present but wrong
            report.line("FAIL", f"data {name}", str(exc))
        else:
            lineage = module.lineage
            report.line(
                "ok",
                f"data {name}",
                f"{lineage['source_path']} ({lineage['train_size'] + lineage['val_size']} "
                f"train / {lineage['test_size']} test)",
            )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments doctor", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument("--data-dir", help="where the datasets are (as --data.data_dir)")
    parser.add_argument(
        "--dry-run", action="store_true", help="report orphaned runs without marking them"
    )
    parser.add_argument("--skip-data", action="store_true", help="do not load the datasets")
    args = parser.parse_args(list(argv))
    uri = store.resolve_tracking_uri(args.tracking_uri)
    report = Report()
    client = check_store(report, uri)
    check_storage(report, uri, client)
    if client is not None:
        check_runs(report, uri, client, args.dry_run)
    if not args.skip_data:
        check_data(report, args.data_dir)
    print("doctor: " + (f"{report.failures} problem(s) found" if report.failures else "all good"))
    return 1 if report.failures else 0
