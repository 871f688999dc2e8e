"""Studies over the values an assignment names: grid and random samplers, `--grid` without a
space file, `--enqueue`d points, one factor at a time (S3).

    python -m pytest tests/test_search_values.py              # fast part (in-process)
    python -m pytest tests/test_search_values.py -m slow      # 2 workers, a kill and a resume

Everything is real: SQLite MLflow stores, Optuna's journal storage, Lightning training on the
tiny Fashion-MNIST of conftest, real processes for the kill test.
"""

from __future__ import annotations

import csv
import io
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from experiments.reports.compare import main as compare
from experiments.search import cli as search
from experiments.search.plan import make_plan
from tests.helpers import child_env, tiny
from tests.test_search import cli, load_study, start_search, study_runs, wait_for

LRS = [0.1, 0.01, 0.001, 0.0001]  # the `values` of the built-in lr space


def quick(fashion_dir) -> list[str]:
    return [*tiny(fashion_dir), "--no-system-metrics"]


def finished_params(study) -> list[dict]:
    return [t.params for t in study.trials if t.state == TrialState.COMPLETE]


def test_grid_flag_runs_the_product_once_each(migrated_store, fashion_dir, tmp_path):
    grid = ["--grid", "model.lr=0.1,0.01", "--grid", "model.net.activation=relu,selu"]
    assert search.main([*grid, "--tracking-uri", migrated_store, *quick(fashion_dir)]) == 0

    name = "grid-lr-activation-s1-mlp"  # derived from the keys
    study = load_study(tmp_path, name)
    points = [(p["model.lr"], p["model.net.activation"]) for p in finished_params(study)]
    assert sorted(points) == sorted([(lr, a) for lr in (0.1, 0.01) for a in ("relu", "selu")])
    assert len(study.trials) == 4  # none repeated, none failed
    _, parents, children = study_runs(migrated_store, name)
    assert len(parents) == 1 and parents[0].data.tags["study.kind"] == "grid"
    assert parents[0].data.params["study.sampler"] == "grid (4 points, each once)"
    runs = {(c.data.params["model.lr"], c.data.params["model.net.activation"]) for c in children}
    assert runs == {("0.1", "relu"), ("0.1", "selu"), ("0.01", "relu"), ("0.01", "selu")}


def test_enqueued_points_run_first(migrated_store, fashion_dir, tmp_path):
    # A parameter's name or the config key it targets; then the random sampler's own point.
    queue = ["--enqueue", "lr=0.01", "--enqueue", "model.lr=0.3"]
    argv = ["lr", "--sampler", "random", "--trials", "3", *queue, "--pruner", "none"]
    assert search.main([*argv, "--tracking-uri", migrated_store, *quick(fashion_dir)]) == 0

    study = load_study(tmp_path, "lr-random-s1-mlp")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    lrs = [t.params["lr"] for t in sorted(study.trials, key=lambda t: t.number)]
    assert lrs[:2] == [0.01, 0.3] and lrs[2] not in (0.01, 0.3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lr", "--enqueue", "lr=0.9"], "lr=0.9 is outside its range [0.0001, 0.5]"),
        (
            ["lr", "--enqueue", "lrr=0.1"],
            "'lrr' is not a parameter of study 'lr'; did you mean lr?",
        ),
        (["lr", "--enqueue", "lr=fast"], "lr needs a number, got 'fast'"),
        (["lr", "--sampler", "grid", "--enqueue", "lr=0.1"], "--enqueue does not go with a grid"),
        (["lr", "--sampler", "grid", "--trials", "5"], "--trials 5 is more than the 4 points"),
        (["regularization", "--sampler", "grid"], "param 'weight_decay' is a float range"),
        (["--grid", "model.lr=0.1,fast"], "--grid model.lr=fast: "),
        (["--grid", "model.learning_rate=0.1"], "learning_rate"),
        (["--grid", "model.lr=0.1,0.1"], "repeats a value"),
        (["--grid", "model.lr"], "expected KEY=V1,V2"),
        (["--grid", "model.lr=0.1", "--sampler", "tpe"], "--sampler tpe does not apply"),
        (["lr", "--grid", "model.lr=0.1"], "--grid and a study (lr) do not go together"),
        (["s3", "--sampler", "grid"], "runs one factor at a time"),
    ],
)
def test_a_refused_value_creates_nothing(no_store, tmp_path, capsys, argv, message):
    assert search.main([*argv, "--tracking-uri", no_store]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


def test_s3_is_one_factor_at_a_time_on_its_own_base():
    plan = make_plan(["s3"])
    assert (plan.base, plan.sampler, plan.pruner) == ("s1-scratch", "one_factor", "none")
    assert plan.study_name == "s3-one-factor-s1-scratch"  # not the former TPE study's s3-...
    assert [o.metric for o in plan.space.objectives] == ["val/acc", "val/f1"]
    base = {"epochs": 10, "lr": 0.1, "l2": 0.01}
    assert plan.points[0] == base
    moved = [{k for k in base if p[k] != base[k]} for p in plan.points[1:]]
    assert all(len(m) == 1 for m in moved)  # one factor at a time, never a product
    counts = {k: sum(m == {k} for m in moved) for k in base}
    assert counts == {"epochs": 4, "lr": 3, "l2": 4} and plan.n_trials == 12
    targets = {p.name: p.target for p in plan.space.params}
    assert targets == {"epochs": "trainer.max_epochs", "lr": "model.lr", "l2": "model.l2_lambda"}
    mlp = make_plan(["s3", "--base", "s1-mlp"])
    assert {p.name: p.target for p in mlp.space.params}["l2"] == "model.weight_decay"


def test_one_factor_study_runs_the_base_once_and_one_table_per_factor(
    migrated_store, fashion_dir, tmp_path, capsys
):
    space = tmp_path / "ofat.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "sampler": "one_factor",
                "base": "s1-mlp",
                "objectives": [
                    {"metric": "val/acc", "direction": "maximize"},
                    {"metric": "val/f1", "direction": "maximize"},
                ],
                "at": {"lr": 0.1, "activation": "relu"},
                "factors": {
                    "lr": {"values": [0.01, 0.1], "target": "model.lr"},
                    "activation": {"values": ["relu", "selu"], "target": "model.net.activation"},
                },
            },
            sort_keys=False,  # the factors' order is the order of the points
        )
    )
    assert search.main([str(space), "--tracking-uri", migrated_store, *quick(fashion_dir)]) == 0
    out = capsys.readouterr().out
    assert "factor lr (activation=relu):" in out and "factor activation (lr=0.1):" in out

    name = "ofat-one-factor-s1-mlp"
    study = load_study(tmp_path, name)
    points = [(t.params["lr"], t.params["activation"]) for t in study.trials]
    assert points == [(0.1, "relu"), (0.01, "relu"), (0.1, "selu")]  # the base once, first
    assert all(t.state == TrialState.COMPLETE for t in study.trials)

    client, parents, children = study_runs(migrated_store, name)
    parent = parents[0].info.run_id
    for child in children:  # each point is a scored model: its test metrics are logged
        assert {"test/acc", "test/f1", "objective/val/f1"} <= set(child.data.metrics)

    def table(factor: str) -> list[dict]:
        path = client.download_artifacts(parent, f"leaderboard_{factor}.csv", str(tmp_path))
        return list(csv.DictReader(io.StringIO(Path(path).read_text())))

    assert [(r["param.lr"], r["trial"]) for r in table("lr")] == [("0.01", "1"), ("0.1", "0")]
    by_activation = [(r["param.activation"], r["trial"]) for r in table("activation")]
    assert by_activation == [("relu", "0"), ("selu", "2")]

    # `compare --study` shows the same tables, one per factor, from the MLflow runs.
    assert compare(["--study", name, "--metric", "test/acc", "--tracking-uri", migrated_store]) == 0
    shown = capsys.readouterr().out
    lr_table = shown.split("factor lr (activation=relu):")[1].split("factor activation")[0]
    assert [line.split()[:2] for line in lr_table.strip().splitlines()[2:]] == [
        ["0.01", f"{name}-001"],
        ["0.1", f"{name}-000"],
    ]
    act_table = shown.split("factor activation (lr=0.1):")[1]
    assert [line.split()[:2] for line in act_table.strip().splitlines()[2:]] == [
        ["relu", f"{name}-000"],
        ["selu", f"{name}-002"],
    ]


@pytest.mark.slow
def test_grid_of_four_lrs_with_two_workers_runs_each_once_after_a_kill(
    store, fashion_dir, tmp_path
):
    args = ["lr", "--sampler", "grid", "--workers", "2", "--tracking-uri", store]
    args += [*tiny(fashion_dir, epochs=2), "--no-system-metrics"]
    proc = start_search(tmp_path, args)

    def trials():
        try:
            return load_study(tmp_path, "lr-grid-s1-mlp").trials
        except (KeyError, FileNotFoundError):
            return []

    def one_done_and_one_training() -> bool:
        now = trials()
        done = any(t.state == TrialState.COMPLETE for t in now)
        return done and any(t.state == TrialState.RUNNING for t in now)

    wait_for(one_done_and_one_training, 300, proc, "one finished trial and one training")
    proc.send_signal(signal.SIGKILL)  # the lead; its extra worker stops by itself
    proc.wait()
    before = trials()
    assert any(t.state == TrialState.COMPLETE for t in before)

    rerun = subprocess.run(
        cli(tmp_path, args), cwd=tmp_path, env=child_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = trials()
    assert sorted(t.params["lr"] for t in after if t.state == TrialState.COMPLETE) == sorted(LRS)
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # Finished trials of the first run were kept, not run again.
    kept = {t.number: t.params for t in before if t.state == TrialState.COMPLETE}
    assert {t.number: t.params for t in after if t.number in kept} == kept


def test_optunas_grid_sampler_alone_skips_a_failed_point_and_stops_ask_and_tell():
    # Why study.next_trial queues each grid point itself (every parameter fixed, so the
    # GridSampler never picks one): GridSampler counts a FAILED point as visited, and once
    # every point is visited it calls Study.stop(), which raises outside study.optimize.
    import optuna

    sampler = optuna.samplers.GridSampler({"x": [1, 2]}, seed=0)
    study = optuna.create_study(sampler=sampler)
    first = study.ask()
    failed = first.suggest_categorical("x", [1, 2])
    study.tell(first, state=TrialState.FAIL)
    second = study.ask()
    assert second.suggest_categorical("x", [1, 2]) != failed  # the failed one is "visited"
    with pytest.raises(RuntimeError, match=r"Study\.stop"):
        study.tell(second, 1.0)
