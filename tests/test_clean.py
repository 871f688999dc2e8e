"""`python -m experiments clean`: deleting selected runs with their checkpoints, artifacts and
studies, on a real SQLite MLflow store, a real Optuna journal and MLflow's own `mlflow gc`.

    python -m pytest tests/test_clean.py
"""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from mlflow.exceptions import MlflowException

from experiments.reports import clean
from experiments.search.storage import default_storage, open_storage
from experiments.tracking import store as tracking_store


def make_run(client, uri, experiment_id, name, status, checkpoint_bytes=0, tags=None):
    run_id = client.create_run(experiment_id, run_name=name, tags=tags or {}).info.run_id
    client.log_metric(run_id, "test/acc", 0.5)
    if checkpoint_bytes:
        folder = tracking_store.checkpoint_dir(uri, run_id)
        folder.mkdir(parents=True)
        (folder / "best.ckpt").write_bytes(b"\0" * checkpoint_bytes)
        client.log_artifact(run_id, str(folder / "best.ckpt"), "checkpoints")
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def artifact_folder(client, run_id) -> Path:
    return clean.local_path(client.get_run(run_id).info.artifact_uri)


def test_clean_frees_a_deleted_runs_checkpoint_and_keeps_a_running_run(
    migrated_store, monkeypatch, capsys
):
    uri = migrated_store
    client = tracking_store.client(uri)
    experiment = tracking_store.ensure_experiment(client, uri, "fashion-mnist")
    done = make_run(client, uri, experiment, "s1-mlp-seed0", "FINISHED", 300_000)
    failed = make_run(client, uri, experiment, "s1-mlp-seed1", "FAILED", 200_000)
    running = make_run(client, uri, experiment, "s1-mlp-seed2", "RUNNING", 100_000)
    done_artifacts = artifact_folder(client, done)
    assert (done_artifacts / "checkpoints" / "best.ckpt").is_file()

    # Nothing to ask on (stdin is no terminal) and no --yes: refused, nothing deleted.
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert clean.main(["--experiment", "fashion-mnist", "--tracking-uri", uri]) == 2
    out, err = capsys.readouterr()
    assert "pass --yes" in err and "frees 1.0 MB" in out  # 2 x (checkpoint + its artifact)
    assert client.get_run(done).info.lifecycle_stage == "active"

    argv = ["--experiment", "fashion-mnist", "--tracking-uri", uri, "--yes"]
    assert clean.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{running[:8]} s1-mlp-seed2: RUNNING, kept" in out
    assert "deleted 2 run(s); freed 1.0 MB" in out
    for run_id in (done, failed):
        assert not tracking_store.checkpoint_dir(uri, run_id).exists()
        with pytest.raises(MlflowException):  # gone from the store, not only marked deleted
            client.get_run(run_id)
    assert not done_artifacts.exists() and not done_artifacts.parent.exists()
    assert client.get_run(running).info.status == "RUNNING"
    assert (tracking_store.checkpoint_dir(uri, running) / "best.ckpt").is_file()
    assert (artifact_folder(client, running) / "checkpoints" / "best.ckpt").is_file()


def test_clean_a_study_removes_its_runs_and_its_optuna_study(migrated_store, capsys):
    uri = migrated_store
    client = tracking_store.client(uri)
    experiment = tracking_store.ensure_experiment(client, uri, "fashion-mnist")
    root = tracking_store.local_root(uri)
    storage = open_storage(default_storage(root))
    for name in ("lr-s1-mlp", "other"):
        study = optuna.create_study(study_name=name, storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    (root / "studies" / "lr-s1-mlp").mkdir(parents=True)
    parent = make_run(
        client,
        uri,
        experiment,
        "lr-s1-mlp",
        "FINISHED",
        tags={"study_name": "lr-s1-mlp", "study_role": "parent"},
    )
    trials = [
        make_run(
            client,
            uri,
            experiment,
            f"lr-s1-mlp-00{i}",
            "FINISHED",
            1000,
            {"study_name": "lr-s1-mlp", "study_role": "trial", "mlflow.parentRunId": parent},
        )
        for i in range(2)
    ]
    kept = make_run(client, uri, experiment, "s1-mlp-seed0", "FAILED")

    assert clean.main(["--study", "nope", "--tracking-uri", uri]) == 2
    assert "no such study; the store has: lr-s1-mlp" in capsys.readouterr().err

    # One trial's run alone: the study is kept in Optuna, and the command says so.
    assert clean.main([trials[0][:8], "--tracking-uri", uri, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "study lr-s1-mlp is kept in its Optuna storage" in out

    assert clean.main(["--study", "lr-s1-mlp", "--tracking-uri", uri, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "deleted 2 run(s)" in out and "deleted Optuna study lr-s1-mlp" in out
    assert optuna.study.get_all_study_names(storage) == ["other"]
    assert not (root / "studies" / "lr-s1-mlp").exists()
    remaining = client.search_runs([experiment])
    assert [r.info.run_id for r in remaining] == [kept]
    assert not tracking_store.checkpoint_dir(uri, trials[1]).exists()


def test_clean_refuses_what_it_cannot_select(migrated_store, capsys):
    uri = migrated_store
    assert clean.main(["--tracking-uri", uri]) == 2
    assert "name what to delete" in capsys.readouterr().err
    assert clean.main(["0123abcd", "--tracking-uri", uri]) == 2
    assert "run id '0123abcd' matches no run" in capsys.readouterr().err
    assert clean.main(["--status", "FAILD", "--tracking-uri", uri]) == 2
    assert "did you mean FAILED?" in capsys.readouterr().err
    assert clean.main(["--older-than", "soon", "--tracking-uri", uri]) == 2
    assert "expected an age like 30m, 12h, 2d" in capsys.readouterr().err
