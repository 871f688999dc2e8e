"""A user's run names and tags (`--run-name`, `--tag`), and `compare` telling runs apart.

    python -m pytest tests/test_labels.py

Real runs of s1-mlp on the tiny Fashion-MNIST in a fresh SQLite store.
"""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient

from experiments.__main__ import main as cli
from experiments.tracking import labels
from tests.helpers import tiny


@pytest.mark.parametrize(
    "key", ["mlflow.runName", "study", "experiment", "lineage.sha256", "system", "version.torch"]
)
@pytest.mark.parametrize(
    "command",
    [
        ["run", "s1-mlp"],
        ["search", "lr"],
        ["evaluate", "0123456789abcdef0123456789abcdef"],
        ["compare-activations"],
    ],
    ids=lambda c: c[0],
)
def test_a_protected_tag_is_refused_by_name_and_nothing_is_created(
    command, key, no_store, tmp_path, capsys
):
    assert cli([*command, "--tracking-uri", no_store, "--tag", f"{key}=mine"]) == 2
    err = capsys.readouterr().err
    assert f"--tag {key}=mine: {key!r} is a tag the project (or MLflow) writes" in err
    assert not (tmp_path / "mlruns").exists()  # no store, no study, no run


def test_malformed_tags_and_names_are_refused():
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        labels.parse_tags(["owner"])
    with pytest.raises(ValueError, match="given twice"):
        labels.parse_tags(["owner=ana", "owner=bo"])
    with pytest.raises(ValueError, match="non-empty name"):
        labels.check_run_name("  ")
    assert labels.parse_tags(["owner=ana", "note=a=b"]) == {"owner": "ana", "note": "a=b"}


def test_names_and_tags_land_on_runs_and_compare_tells_them_apart(
    migrated_store, fashion_dir, capsys
):
    store = migrated_store
    base = ["run", "s1-mlp", "--tracking-uri", store, *tiny(fashion_dir)]
    assert cli([*base, "--model.lr", "0.01", "--no-system-metrics"]) == 0
    argv = [*base, "--model.lr", "0.05", "--no-system-metrics"]
    assert cli([*argv, "--run-name", "faster", "--tag", "owner=ana", "--tag", "purpose=demo"]) == 0
    capsys.readouterr()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("fashion-mnist")
    first, second = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    assert first.info.run_name == "s1-mlp-seed0" and second.info.run_name == "faster"
    assert second.data.tags["owner"] == "ana" and second.data.tags["purpose"] == "demo"
    assert "owner" not in first.data.tags
    # Every other tag on the runs is one the project writes: a user cannot overwrite it.
    written = set(first.data.tags) | set(second.data.tags)
    assert [k for k in written - {"owner", "purpose"} if not labels.protected(k)] == []

    # Same experiment, same seed: told apart by id, name, start and the param that differs.
    assert cli(["compare", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", out[0].strip()) == [
        "run",
        "name",
        "start (UTC)",
        "status",
        "experiment",
        "model.lr",
        "test/acc",
    ]
    rows = {line.split()[0]: line for line in out[2:4]}
    assert set(rows) == {first.info.run_id[:8], second.info.run_id[:8]}
    assert " 0.01 " in rows[first.info.run_id[:8]] and "s1-mlp-seed0" in rows[first.info.run_id[:8]]
    assert " 0.05 " in rows[second.info.run_id[:8]] and "faster" in rows[second.info.run_id[:8]]
    assert labels.start_time(second.info.start_time) in rows[second.info.run_id[:8]]

    assert cli(["compare", "--tracking-uri", store, "--tag", "owner=ana"]) == 0
    out = capsys.readouterr().out
    assert second.info.run_id[:8] in out and first.info.run_id[:8] not in out
    assert cli(["compare", "--tracking-uri", store, "--since", "2999-01-01"]) == 0
    assert "no runs match" in capsys.readouterr().out
    assert cli(["compare", "--tracking-uri", store, "--status", "KILLED"]) == 0
    assert "no runs match" in capsys.readouterr().out
    assert cli(["compare", "--tracking-uri", store, "--study", "nope"]) == 2
    assert "--study 'nope': no such study; the store has: none yet" in capsys.readouterr().err
    assert cli(["compare", "--tracking-uri", store, "--since", "yesterday"]) == 2
    assert "expected an age like 30m, 12h, 2d, 1w or a date" in capsys.readouterr().err

    # An evaluation run is listed only with --kind evaluation.
    evaluate = ["evaluate", second.info.run_id, "--tracking-uri", store, "--run-name", "recheck"]
    assert cli([*evaluate, "--tag", "owner=ana"]) == 0
    capsys.readouterr()
    assert cli(["compare", "--tracking-uri", store, "--tag", "owner=ana"]) == 0
    assert "recheck" not in capsys.readouterr().out
    assert cli(["compare", "--tracking-uri", store, "--kind", "evaluation"]) == 0
    out = capsys.readouterr().out
    assert "recheck" in out and "faster" not in out
    (evaluation,) = client.search_runs([experiment.experiment_id], "tags.kind = 'evaluation'")
    assert evaluation.info.run_name == "recheck" and evaluation.data.tags["owner"] == "ana"
