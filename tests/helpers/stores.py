"""Copies of MLflow SQLite stores, so that a test can change a store a session fixture shares."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path


def copy_store(uri: str, folder: Path) -> str:
    """A copy of the SQLite store `uri` (its database and everything beside it: artifacts,
    checkpoints) in `folder`/mlruns; returns the copy's URI. Run ids, model ids and registered
    versions are the same; the copy's experiments, runs and models point at the copy's own
    artifacts, so nothing a test does to the copy reaches the original.

    MLflow keeps absolute artifact locations (`file:///...`) in the database; they are
    rewritten in every text column of every table, whatever MLflow's schema. The copy is
    checked through MLflow's public API: no experiment, run or logged model may still point
    at the original folder.
    """
    from mlflow import MlflowClient

    source = Path(uri.removeprefix("sqlite:///")).resolve()
    old_root, new_root = source.parent, (Path(folder) / "mlruns").resolve()
    shutil.copytree(old_root, new_root)
    db = new_root / source.name
    with sqlite3.connect(db) as connection:
        _replace_text(connection, str(old_root), str(new_root))
    connection.close()

    copied = f"sqlite:///{db}"
    client = MlflowClient(copied)
    experiments = client.search_experiments()
    locations = [e.artifact_location for e in experiments]
    ids = [e.experiment_id for e in experiments]
    locations += [r.info.artifact_uri for r in client.search_runs(ids)] if ids else []
    locations += [m.artifact_location for m in client.search_logged_models(ids)] if ids else []
    stale = [location for location in locations if str(old_root) in location]
    assert not stale, f"the copy of {uri} still points at the original: {stale}"
    return copied


def _replace_text(connection: sqlite3.Connection, old: str, new: str) -> None:
    tables = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
            connection.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                (old, new, old),
            )
