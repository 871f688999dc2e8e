"""Optuna studies tracked in MLflow: `python -m experiments search`.

    python -m pytest tests/test_search.py              # fast part
    python -m pytest tests/test_search.py -m slow      # real process kill, 2 workers

Everything is real: a fresh SQLite MLflow store, Optuna's journal storage, Lightning
training on the tiny Fashion-MNIST of conftest, and real processes for the kill/workers
tests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from experiments.reports import compare
from experiments.search import cli as search
from experiments.search.plan import make_plan
from experiments.search.space import load_space
from experiments.search.study import MAX_CONSECUTIVE_FAILURES, open_study
from experiments.search.trial import EpochPruning
from experiments.tracking import labels
from experiments.tracking.health import process_alive
from experiments.training.config import ConfigError, parse
from experiments.training.outputs import RunOutputs
from experiments.training.runner import run_experiment
from models.activations import ACTIVATIONS
from tests.helpers import child_env, tiny, write_space


def journal(tmp_path: Path) -> Path:
    return tmp_path / "mlruns" / "optuna" / "journal.log"


def load_study(tmp_path: Path, name: str = "lr-s1-mlp") -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal(tmp_path)))
    )
    return optuna.load_study(study_name=name, storage=storage)


def study_runs(uri: str, name: str = "lr-s1-mlp"):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fashion-mnist")
    runs = client.search_runs([experiment.experiment_id], f"tags.study_name = '{name}'")
    parents = [r for r in runs if r.data.tags["study_role"] == "parent"]
    children = [r for r in runs if r.data.tags["study_role"] == "trial"]
    return client, parents, children


# --- fast ------------------------------------------------------------------------------


def test_lr_study_leaves_parent_children_plots_and_leaderboard(
    store, fashion_dir, tmp_path, capsys
):
    # The base experiment shows its progress bar (the user did not turn it off); trials
    # run without one, the best config keeps the base's.
    overrides = tiny(fashion_dir, epochs=2)
    bar = overrides.index("--trainer.enable_progress_bar")
    del overrides[bar : bar + 2]
    argv = ["lr", "--trials", "4", "--tracking-uri", store, *overrides]
    labelled = ["--run-name", "lr-demo", "--tag", "owner=ana", "--tag", "purpose=demo"]
    assert search.main([*argv, "--register", "fashion-mlp", *labelled]) == 0

    client, parents, children = study_runs(store)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # --run-name names the parent; --tag lands on the parent and on every trial.
    assert parent.info.run_name == "lr-demo"
    assert "python -m experiments dashboard" in parent.data.tags["mlflow.note.content"]
    for run in (parent, *children):
        assert run.data.tags["owner"] == "ana" and run.data.tags["purpose"] == "demo"
        own = [k for k in run.data.tags if k not in ("owner", "purpose")]
        assert [k for k in own if not labels.protected(k)] == []
    assert sorted(c.info.run_name for c in children) == [f"lr-s1-mlp-00{i}" for i in range(4)]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status in ("FINISHED", "KILLED")
        state = child.data.tags["trial_state"]
        assert state == {"FINISHED": "COMPLETE", "KILLED": "PRUNED"}[child.info.status]
        # The epoch tag marks exactly the pruned trials; no trial of this study failed.
        assert ("pruned_at_epoch" in child.data.tags) == (state == "PRUNED")
        assert "error" not in child.data.tags
        assert "objective/val/acc" in child.data.metrics
        assert "trial.lr" in child.data.params
        assert child.data.params["model.lr"] == child.data.params["trial.lr"]
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == [0, 1, 2, 3]

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "best_config.yaml", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    for name in ("optimization_history", "parallel_coordinate", "slice"):
        assert f"plots/{name}.png" in plots
    local = Path(client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path)))
    lines = local.read_text().splitlines()
    assert lines[0].startswith("rank,trial,state,val/acc,epochs_trained,seconds,param.lr,")
    assert len(lines) == 5

    # The best config is a complete experiment file that `run --config` accepts.
    best = Path(client.download_artifacts(parent.info.run_id, "best_config.yaml", str(tmp_path)))
    cfg = parse(str(best), [])
    study = load_study(tmp_path)
    assert cfg.get("model.lr") == pytest.approx(study.best_trial.params["lr"])
    best_run = client.get_run(study.best_trial.user_attrs["mlflow_run_id"])
    assert str(cfg.threads) == best_run.data.params["threads"]  # the count it ran on
    assert len(study.trials) == 4
    assert cfg.trainer.get("enable_progress_bar") is not False
    assert "enable_progress_bar: false" not in best.read_text()
    # `compare --study` shows the study's space, objective and each trial's searched value.
    capsys.readouterr()
    assert compare.main(["--tracking-uri", store, "--study", "lr-s1-mlp"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("study lr-s1-mlp: objective maximize val/acc; searched lr: float ")
    assert out[0].endswith("log -> model.lr")
    assert out[1].split()[-3:] == ["lr", "objective/val/acc", "test/acc"]
    assert len(out) == 2 + 1 + 4  # heading, column names, rule, one row per trial (any state)
    # The dashboard's view of the study: its objective's name, each trial's MLflow run.
    assert study.metric_names == ["val/acc"]
    by_number = {int(c.data.tags["trial_number"]): c for c in children}
    for trial in study.trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run"] == (
            f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )

    # Only the best trial has an MLflow model, logged once the study ended, and registered.
    best_run = parent.data.tags["best_run_id"]
    (model,) = client.search_logged_models(experiment_ids=[parent.info.experiment_id])
    assert model.source_run_id == best_run
    assert client.get_run(best_run).info.status == "FINISHED"
    version = client.get_model_version("fashion-mlp", "1")
    assert version.run_id == best_run and version.source == f"models:/{model.model_id}"
    assert client.get_run(parent.info.run_id).data.tags["best_model_id"] == model.model_id


def test_pruned_trial_run_ends_killed_with_epoch_tag(store, fashion_dir):
    """TrialPruned raised inside fit (as the pruning callback does) -> KILLED, not FAILED,
    when the caller names it a planned stop (as a study's trial does)."""
    from lightning.pytorch.callbacks import Callback

    class PruneAtSecondEpoch(Callback):
        def on_validation_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise optuna.TrialPruned("Trial was pruned at epoch 1.")

    cfg = parse("s1-mlp", tiny(fashion_dir, epochs=3))
    with pytest.raises(optuna.TrialPruned):
        run_experiment(
            cfg,
            store,
            callbacks=[PruneAtSecondEpoch()],
            verbose=False,
            planned_stops=(optuna.TrialPruned,),
        )
    run = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("fashion-mnist").experiment_id]
    )[0]
    assert run.info.status == "KILLED"
    assert run.data.tags["pruned_at_epoch"] == "1"
    assert "error" not in run.data.tags


class AlwaysPrune(optuna.pruners.BasePruner):
    """A pruner that rejects every trial at every step."""

    def prune(self, study, trial) -> bool:
        return True


@pytest.mark.parametrize(("epochs", "pruned"), [(1, False), (2, True)])
def test_a_trial_that_trained_all_its_epochs_is_not_pruned(
    epochs, pruned, migrated_store, fashion_dir
):
    """The pruner is asked after every epoch but the last: a 1-epoch trial always completes
    (optuna-integration's callback pruned it after its only epoch, below the median)."""
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    cfg = parse("s1-mlp", tiny(fashion_dir, epochs=epochs))
    stopped = None
    try:
        run_experiment(
            cfg,
            migrated_store,
            callbacks=[EpochPruning(trial, "val/acc")],
            verbose=False,
            planned_stops=(optuna.TrialPruned,),
            outputs=RunOutputs(log_model=False, system_metrics_s=None),
        )
    except optuna.TrialPruned as exc:
        stopped = str(exc)
    assert stopped == ("Trial was pruned at epoch 0." if pruned else None)
    frozen = study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, 0.5)
    assert list(frozen.intermediate_values) == [0]  # reported after epoch 0 either way


def test_failed_trials_end_failed_with_the_error_and_stop_the_worker(
    store, fashion_dir, tmp_path, capsys
):
    """A trial whose config the run refuses (no GPU here) ends FAIL; 3 in a row stop. The
    run's checks come before its MLflow run, so a refused trial leaves no run."""
    space = write_space(
        tmp_path / "gpu.yaml",
        {"device": {"type": "categorical", "choices": ["gpu"], "target": "trainer.accelerator"}},
    )
    argv = [str(space), "--trials", "2", "--tracking-uri", store, *tiny(fashion_dir)]
    assert search.main(argv) == 1
    captured = capsys.readouterr()
    assert f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed" in captured.err

    _, parents, children = study_runs(store, "gpu-s1-mlp")
    assert children == []
    assert parents[0].info.status == "FAILED"
    study = load_study(tmp_path, "gpu-s1-mlp")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert "gpu" in study.trials[0].user_attrs["error"].lower()


def test_bad_range_is_refused_before_any_study_or_run(no_store, tmp_path, capsys):
    store = no_store
    space = write_space(
        tmp_path / "bad.yaml",
        {"lr": {"type": "float", "low": 0.5, "high": 0.01, "log": True, "target": "model.lr"}},
    )
    assert search.main([str(space), "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert "param 'lr'" in err and "low (0.5) must be below high (0.01)" in err
    assert not (tmp_path / "mlruns").exists()


def test_unknown_target_key_is_named(no_store, tmp_path, capsys):
    store = no_store
    space = write_space(
        tmp_path / "typo.yaml",
        {"lr": {"type": "float", "low": 0.01, "high": 0.5, "target": "model.learning_rate"}},
    )
    assert search.main([str(space), "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "valid keys under 'model'" in err
    assert not (tmp_path / "mlruns").exists()


def test_resume_with_a_different_space_is_refused(store, fashion_dir, tmp_path, capsys):
    lr = {"type": "float", "low": 0.01, "high": 0.5, "log": True, "target": "model.lr"}
    space = write_space(tmp_path / "mine.yaml", {"lr": lr})
    argv = [str(space), "--tracking-uri", store, *tiny(fashion_dir)]
    plan = make_plan(argv)
    open_study(plan, create=True)  # the study exists, as after a first run

    write_space(space, {"lr": {**lr, "high": 0.9}})
    assert search.main(argv) == 2
    err = capsys.readouterr().err
    assert "search_space.params.lr.high: was 0.5, now 0.9" in err
    assert "--study-name" in err

    # The other direction is part of the study too.
    space.write_text(
        yaml.safe_dump(
            {
                "objectives": [{"metric": "val/loss", "direction": "minimize"}],
                "params": {"lr": lr},
            }
        )
    )
    assert search.main(argv) == 2
    err = capsys.readouterr().err
    assert "directions.0: was 'maximize', now 'minimize'" in err


def test_spaces_fit_their_base_models():
    mlp_base, scratch_base = parse("s1-mlp", []), parse("s1-scratch", [])
    activation = load_space("activation", mlp_base.classes())
    assert activation.params[0].choices == tuple(ACTIVATIONS)
    assert activation.params[0].target == "model.net.activation"
    assert load_space("activation", scratch_base.classes()).params[0].target == "model.activation"
    mlp = load_space("regularization", mlp_base.classes())
    assert [(p.name, p.target) for p in mlp.params] == [
        ("weight_decay", "model.weight_decay"),
        ("dropout", "model.net.dropout"),
    ]
    scratch = load_space("regularization", scratch_base.classes())
    assert [(p.name, p.target) for p in scratch.params] == [("l2_lambda", "model.l2_lambda")]
    lenet = load_space("regularization", parse("s0-cnn", []).classes())  # LeNet: no dropout
    assert [p.name for p in lenet.params] == ["weight_decay"]
    s3 = load_space("s3", scratch_base.classes())
    assert s3.multi_objective and [o.metric for o in s3.objectives] == ["val/acc", "val/f1"]
    assert {p.target for p in s3.params} == {"trainer.max_epochs", "model.lr", "model.l2_lambda"}
    # Every built-in space sets values its default base accepts.
    for name in ("lr", "regularization", "activation", "s3"):
        space = load_space(name, mlp_base.classes())
        trial = mlp_base.with_values(space.example_values())
        for key, value in space.example_values().items():
            assert trial.get(key) == value


def test_space_errors_name_the_param(tmp_path):
    classes = parse("s1-mlp", []).classes()
    cases = {
        "log scale needs low > 0": {"type": "float", "low": 0.0, "high": 1.0, "log": True},
        "type 'real' is not one of": {"type": "real", "low": 0.0, "high": 1.0},
        "categorical needs 'choices'": {"type": "categorical", "choices": []},
        "no target for the base's classes (MLP, ImageClassifier, ClassificationModule)": {
            "type": "float",
            "low": 0.0,
            "high": 1.0,
            "target": {"ScratchClassifier": "model.l2_lambda"},
        },
    }
    for message, spec in cases.items():
        spec.setdefault("target", "model.lr")
        path = write_space(tmp_path / "space.yaml", {"x": spec})
        with pytest.raises(ConfigError, match="param 'x'") as info:
            load_space(str(path), classes)
        assert message in str(info.value)


# --- slow: real processes --------------------------------------------------------------


def cli(tmp_path: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "experiments", "search", *args]


def start_search(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    """`search ARGS` in a fresh process, its output kept for the failure message."""
    return subprocess.Popen(
        cli(tmp_path, args),
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"search exited ({proc.returncode}) before {what}:\n{out}")
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def study_trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    if not journal(tmp_path).exists():
        return []
    try:
        return load_study(tmp_path).trials
    except KeyError:  # study not created yet
        return []


@pytest.mark.slow
def test_killed_study_resumes_without_losing_or_repeating_trials(store, fashion_dir, tmp_path):
    # 40-epoch trials on the tiny data (seconds each): the kill lands inside the second.
    args = ["lr", "--trials", "4", "--tracking-uri", store, *tiny(fashion_dir, epochs=40)]
    proc = start_search(tmp_path, args)

    def one_done_and_next_training() -> bool:
        trials = study_trials(tmp_path)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        # The running trial has its MLflow run (recorded at fit start): the kill leaves
        # a RUNNING run behind that the recovery must close.
        training = any(
            t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials
        )
        return done >= 1 and training

    wait_for(one_done_and_next_training, 240, proc, "one finished trial and one training")
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: the running trial stays RUNNING
    proc.wait()

    before = load_study(tmp_path).trials
    finished_before = {
        t.number: (t.state, t.params, t.user_attrs["mlflow_run_id"])
        for t in before
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    }
    killed = [t for t in before if t.state == TrialState.RUNNING]
    assert finished_before and len(killed) == 1

    rerun = subprocess.run(
        cli(tmp_path, args),
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"trial {killed[0].number}: worker" in rerun.stdout

    after = load_study(tmp_path).trials
    finished = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    numbers = [t.number for t in after]
    assert len(numbers) == len(set(numbers))
    for number, (state, params, run_id) in finished_before.items():
        t = after[number]
        assert (t.state, t.params, t.user_attrs["mlflow_run_id"]) == (state, params, run_id)
    dead = after[killed[0].number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in finished if t.user_attrs.get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].params == dead.params
    run_ids = [t.user_attrs["mlflow_run_id"] for t in finished]
    assert len(set(run_ids)) == 4

    _, parents, children = study_runs(store)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_id = {c.info.run_id: c for c in children}
    assert {by_id[r].info.status for r in run_ids} <= {"FINISHED", "KILLED"}
    # Killed after its run was created (the wait above): the recovery closed it KILLED.
    assert by_id[dead.user_attrs["mlflow_run_id"]].info.status == "KILLED"
    assert all(c.info.status != "RUNNING" for c in children)


@pytest.mark.slow
def test_two_workers_share_one_study_exactly(store, fashion_dir, tmp_path):
    # Unpruned 60-epoch trials (about 3 s each on the tiny data): the study outlasts the
    # second worker's start-up (3-epoch trials, 0.2 s each since trials got cheaper, did not).
    args = ["lr", "--trials", "6", "--workers", "2", "--pruner", "none", "--tracking-uri", store]
    args += tiny(fashion_dir, epochs=60)
    done = subprocess.run(
        cli(tmp_path, args),
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[worker 1]" in done.stdout

    trials = load_study(tmp_path).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6 and len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials

    _, parents, children = study_runs(store)
    assert len(parents) == 1 and len(children) == 6
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == list(range(6))
    assert all(c.info.status == "FINISHED" for c in children)


@pytest.mark.slow
def test_extra_workers_stop_when_the_lead_process_is_killed(store, fashion_dir, tmp_path):
    # SIGKILL gives the lead no chance to signal its workers: they must notice by themselves.
    args = ["lr", "--trials", "20", "--workers", "2", "--pruner", "none", "--tracking-uri", store]
    args += tiny(fashion_dir, epochs=5)
    proc = start_search(tmp_path, args)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def worker_training() -> bool:
        trials = study_trials(tmp_path)
        owners = {t.user_attrs.get("worker", "") for t in trials if t.state == TrialState.RUNNING}
        return any(f":{pid}:" in owner for owner in owners for pid in children.read_text().split())

    wait_for(worker_training, 240, proc, "the extra worker running a trial")
    worker = int(children.read_text().split()[0])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while process_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(worker), "the extra worker outlived the killed lead by 60 s"
    # It stopped through its SIGTERM handler: its trial was failed and queued again.
    trials = load_study(tmp_path).trials
    theirs = [t for t in trials if f":{worker}:" in t.user_attrs.get("worker", "")]
    assert any(
        t.state == TrialState.FAIL and t.user_attrs.get("failed_because") == "worker interrupted"
        for t in theirs
    )
