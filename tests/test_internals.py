"""The library behaviours the project works around, each shown on the real library.

experiments/docs/internals.md lists the workarounds; each test here fails when an upgrade changes the
behaviour its workaround exists for, which is the moment to drop or revisit it.
"""

from __future__ import annotations

import os
import time

import lightning as L
import optuna
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from experiments.tracking import store as tracking_store
from experiments.training import runner
from experiments.training.config import parse
from models import ImageClassifier
from models.components import MLP
from tests.helpers import tiny


def _fit(logger) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(MLP(4, 2, hidden_sizes=[3]), input_shape=(1, 2, 2), num_classes=2)
    data = TensorDataset(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    trainer = L.Trainer(
        max_epochs=1,
        logger=logger,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(data, batch_size=4)
    trainer.fit(model, loader, loader)


def test_mlflow_logger_closes_its_run_when_fit_returns(tmp_path):
    # Why runner.RunLogger overrides `finalize`: Lightning's MLFlowLogger marks the run
    # FINISHED at the end of `fit`, before the test set is scored and the artifacts are
    # logged (and FAILED for a Ctrl-C), so a run killed during `test` would read FINISHED.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("internals")
    theirs, ours = (client.create_run(experiment).info.run_id for _ in range(2))
    _fit(MLFlowLogger(tracking_uri=uri, run_id=theirs))
    _fit(runner.run_logger(uri, ours, "internals"))
    assert client.get_run(theirs).info.status == "FINISHED"
    assert client.get_run(ours).info.status == "RUNNING"  # the runner closes it after test


def test_a_run_does_not_move_the_default_store_of_the_next(store, fashion_dir):
    # MLFlowLogger calls mlflow.set_tracking_uri(run's URI), which exports
    # MLFLOW_TRACKING_URI for the rest of the process; the default store is read from the
    # variable as the process started (store.USER_TRACKING_URI), so it does not follow.
    assert tracking_store.USER_TRACKING_URI is None  # tests/conftest.py removes it
    try:
        runner.run_experiment(parse("s1-mlp", tiny(fashion_dir)), store, verbose=False)
        assert os.environ.get("MLFLOW_TRACKING_URI") == store  # the logger's export
        assert tracking_store.resolve_tracking_uri(None) == tracking_store.DEFAULT_TRACKING_URI
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_max_trials_callback_overshoots_with_two_workers(tmp_path):
    # Why the study loop counts and asks under one lock (search/storage.py study_lock)
    # instead of `study.optimize` with MaxTrialsCallback: the callback checks the count
    # after a trial ends, so two workers that both see 2 of 3 done both start one more.
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    from optuna.study import MaxTrialsCallback

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, study_name="overshoot")

    def objective(trial):
        time.sleep(0.3)
        return trial.suggest_float("x", 0, 1)

    wanted = MaxTrialsCallback(3, states=(optuna.trial.TrialState.COMPLETE,))
    study.optimize(objective, n_jobs=2, callbacks=[wanted])
    assert len(study.trials) == 4  # one more than asked for


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_ask_and_tell_trials_never_go_stale_without_a_heartbeat(tmp_path):
    # Why search/storage.py Heartbeat beats for ask/tell trials on an RDB storage: only
    # `study.optimize` records heartbeats, and a trial with none is never found stale, so
    # a worker that died on another host would leave its trial RUNNING for good.

    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=1, grace_period=1
    )
    study = optuna.create_study(storage=storage, study_name="stale")
    study.ask()  # the worker that asked dies here
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]


def test_log_model_with_only_a_run_id_files_the_model_under_the_default_experiment(
    tmp_path, monkeypatch
):
    # Why logged_model.log_trained_model makes the run the active one (`mlflow.start_run(
    # run_id=...)`) around `mlflow.pytorch.log_model`: given only `run_id`, MLflow's
    # Model.log creates the LoggedModel in the active experiment, the Default one (0), not
    # the run's, so the run's experiment would not list its own model.
    import mlflow
    import numpy as np

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("internals")
    run_id = client.create_run(experiment).info.run_id
    info = mlflow.pytorch.log_model(
        torch.nn.Linear(3, 2),
        name="model",
        run_id=run_id,
        serialization_format="pt2",
        input_example=np.zeros((2, 3), dtype=np.float32),
        pip_requirements=["torch"],
    )
    logged = client.get_logged_model(info.model_id)
    assert logged.source_run_id == run_id
    assert logged.experiment_id == "0" != experiment


def test_lightning_pruning_callback_prunes_after_the_last_epoch():
    # Why search.trial.EpochPruning replaces optuna-integration's callback: it asks the
    # pruner after the last epoch too, so a trial that trained all its epochs (every trial
    # of a 1-epoch study) could end PRUNED. When this stops raising, the stock callback will do.
    from optuna_integration import PyTorchLightningPruningCallback

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    trial = optuna.create_study(direction="maximize", pruner=AlwaysPrune()).ask()
    torch.manual_seed(0)
    model = ImageClassifier(MLP(4, 2, hidden_sizes=[3]), input_shape=(1, 2, 2), num_classes=2)
    data = TensorDataset(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PyTorchLightningPruningCallback(trial, monitor="val/acc")],
    )
    loader = DataLoader(data, batch_size=4)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        trainer.fit(model, loader, loader)


def test_mlflow_gc_command_takes_the_options_clean_passes():
    # `clean` runs MLflow's `mlflow gc` click command in this process (`main(args,
    # standalone_mode=False)`) instead of a second Python; it relies on these options.
    from mlflow.cli import gc

    names = {option.name for option in gc.params}
    assert {"backend_store_uri", "tracking_uri", "run_ids", "logged_model_ids"} <= names


def test_system_metrics_monitor_runs_its_overridable_loop_and_quits_at_a_failed_request(
    monkeypatch,
):
    """`KeptSystemMetrics` (tracking/system_metrics.py) overrides `monitor`, which `start()`
    runs in its thread, and runs it again because it returns at the first failed request."""
    import threading

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from tests.helpers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port(range(5660, 5700))  # nothing listens: every request fails at once

    class Probe(SystemMetricsMonitor):
        entered, returned = threading.Event(), threading.Event()

        def monitor(self):
            self.entered.set()
            super().monitor()
            self.returned.set()

    probe = Probe("0" * 32, sampling_interval=0.1, tracking_uri=f"http://127.0.0.1:{port}")
    probe.start()
    try:
        assert probe.entered.wait(30), "start() no longer runs the overridable monitor()"
        assert probe.returned.wait(60), "monitor() no longer returns at a failed request"
    finally:
        probe.finish()


def test_model_checkpoint_keys_its_state_by_class_name_and_fixed_settings(tmp_path):
    """`callbacks.ModelCheckpoint` computes `state_key` once and keeps Lightning's class name:
    the key must be Lightning's for the same settings (or checkpoints written before would
    resume without their callback state), and a trained run's checkpoints must hold it."""
    from lightning.pytorch.callbacks import ModelCheckpoint as LightningCheckpoint

    from experiments.training.callbacks import ModelCheckpoint

    settings = dict(dirpath=tmp_path, filename="best", monitor="val/acc", mode="max")
    ours, theirs = ModelCheckpoint(**settings), LightningCheckpoint(**settings)
    assert ours.state_key == theirs.state_key
    stepped = dict(dirpath=tmp_path, filename="s", every_n_train_steps=2)
    assert ModelCheckpoint(**stepped).state_key == LightningCheckpoint(**stepped).state_key


def test_model_checkpoint_without_step_triggers_does_nothing_at_batch_end(tmp_path):
    """Lightning's ModelCheckpoint saves nothing at a training batch's end unless
    `every_n_train_steps` or `train_time_interval` is set, which is why ours skips the hook
    then; with `every_n_train_steps` ours still saves at the steps Lightning's does."""
    from lightning.pytorch.callbacks import ModelCheckpoint as LightningCheckpoint

    from experiments.training.callbacks import ModelCheckpoint

    def saved(cls, folder, **triggers) -> list[str]:
        torch.manual_seed(0)
        model = ImageClassifier(MLP(4, 2, hidden_sizes=[3]), input_shape=(1, 2, 2), num_classes=2)
        data = TensorDataset(torch.randn(16, 1, 2, 2), torch.randint(0, 2, (16,)))
        seen: list[list[str]] = []

        class Watch(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                seen.append(sorted(p.name for p in folder.glob("*.ckpt")))

        checkpoint = cls(dirpath=folder, filename="{step}", save_top_k=-1, **triggers)
        trainer = L.Trainer(
            max_epochs=1,
            logger=False,
            accelerator="cpu",
            callbacks=[Watch(), checkpoint],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, DataLoader(data, batch_size=4))
        return [*seen, sorted(p.name for p in folder.glob("*.ckpt"))]

    # No step trigger: nothing during the epoch, one file at its end, with either class.
    plain = saved(LightningCheckpoint, tmp_path / "a")
    assert plain == saved(ModelCheckpoint, tmp_path / "b")
    assert plain[-2] == [] and plain[-1] == ["step=4.ckpt"]
    # A step trigger: the same files at the same batches.
    stepped = saved(LightningCheckpoint, tmp_path / "c", every_n_train_steps=2)
    assert stepped == saved(ModelCheckpoint, tmp_path / "d", every_n_train_steps=2)
    assert "step=2.ckpt" in stepped[-2]
