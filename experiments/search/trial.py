"""One Optuna trial = one nested MLflow run of the base experiment with the trial's values.

Its epoch with the best first objective gives every objective's value: docs/search.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState

from experiments.search.plan import Plan
from experiments.search.space import SearchSpace
from experiments.search.storage import (
    RETRY_ATTR,
    Heartbeat,
    open_storage,
    retry,
    trial_storage_id,
)
from experiments.tracking import store
from experiments.training.runner import run_experiment

#: the trial user attribute holding its MLflow run's page (shown by the dashboard)
RUN_ADDRESS_ATTR = "mlflow_run"


class TrialRecorder(Callback):
    """Keep the validation metrics of each epoch, the MLflow run id of the trial, and the
    seconds its epochs took (training and validation: `bench search`'s fixed cost per trial
    is the rest of the trial's time)."""

    def __init__(self, trial: optuna.Trial, metrics: list[str], tracking_uri: str) -> None:
        self.trial = trial
        self.metrics = metrics
        self.tracking_uri = tracking_uri
        self.history: list[dict[str, float]] = []
        self.run_id: str | None = None
        self.epoch_seconds: dict[int, float] = {}
        self._epoch_started = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.run_id = getattr(trainer.logger, "run_id", None)
        if self.run_id:
            # Recorded at once: if this worker dies, the recovery closes this run KILLED.
            self.trial.set_user_attr("mlflow_run_id", self.run_id)
            # The run's page, shown with the trial in the dashboard.
            experiment_id = trainer.logger.experiment_id
            address = store.run_address(self.tracking_uri, experiment_id, self.run_id)
            self.trial.set_user_attr(RUN_ADDRESS_ATTR, address)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_started = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._epoch_ended(trainer)

    def _epoch_ended(self, trainer) -> None:
        # The epoch's span so far: its validation (a pruned trial stops there) or its end.
        seconds = time.monotonic() - self._epoch_started
        self.epoch_seconds[trainer.current_epoch] = seconds

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._epoch_ended(trainer)
        logged = trainer.callback_metrics
        self.history.append({m: float(logged[m]) for m in self.metrics if m in logged})


@dataclass
class TrialOutcome:
    number: int
    state: TrialState
    values: list[float] | None
    params: dict[str, Any]
    epochs: int
    seconds: float
    error: str | None = None
    retry_of: int | None = None


def objective_values(space: SearchSpace, history: list[dict[str, float]]) -> list[float]:
    first = space.objectives[0]
    rows = [row for row in history if all(o.metric in row for o in space.objectives)]
    if not rows:
        raise RuntimeError(
            f"objective metric {first.metric!r} was never logged: the base experiment needs "
            "a validation split (data.val_size > 0) and at least one validation pass"
        )
    pick = max if first.direction == "maximize" else min
    best = pick(rows, key=lambda row: row[first.metric])
    return [best[o.metric] for o in space.objectives]


def run_trial(
    plan: Plan, study: optuna.Study, trial: optuna.Trial, parent_run_id: str
) -> TrialOutcome:
    """Suggest, train, tell Optuna; the child run ends FINISHED, KILLED (pruned) or FAILED."""
    started = time.monotonic()
    space = plan.space
    params = space.suggest(trial)
    recorder = TrialRecorder(trial, [o.metric for o in space.objectives], plan.tracking_uri)
    # Optuna takes no intermediate values (reports, pruning) from a multi-objective trial.
    callbacks: list[Any] = [recorder]
    if not space.multi_objective:
        callbacks.append(EpochPruning(trial, monitor=recorder.metrics[0], prune=plan.prunes))
    retry_of = trial.user_attrs.get(RETRY_ATTR)
    tags = {
        **plan.tags,
        "mlflow.parentRunId": parent_run_id,
        "study": space.name,
        "study_name": plan.study_name,
        "study_role": "trial",
        "trial_number": str(trial.number),
    }
    if retry_of is not None:
        tags["retry_of_trial"] = str(retry_of)
    tags.update({tag: str(params[name]) for name, tag in plan.param_tags.items()})

    storage = open_storage(plan.storage_url)
    heartbeat = Heartbeat(storage, trial_storage_id(storage, study.study_name, trial.number))
    state, values, error = TrialState.COMPLETE, None, None
    try:
        run_experiment(
            plan.base_config.with_values(space.config_values(params)),
            plan.tracking_uri,
            callbacks=callbacks,
            tags=tags,
            run_name=f"{plan.study_name}-{trial.number:03d}",
            verbose=False,
            planned_stops=(optuna.TrialPruned,),
            outputs=plan.outputs,
        )
        values = objective_values(space, recorder.history)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except Exception as exc:  # a FAILED trial, its error recorded
        state, error = TrialState.FAIL, f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("error", error[:2000])
    except (KeyboardInterrupt, SystemExit):
        heartbeat.stop()
        # An interrupted worker's trial is FAILED and its values are queued again as a retry.
        trial.set_user_attr("failed_because", "worker interrupted")
        study.tell(trial, state=TrialState.FAIL)
        retry(study, trial)
        raise
    finally:  # also when recording the error fails (the storage itself)
        heartbeat.stop()
    epochs = len(recorder.history)
    trial.set_user_attr("epochs", epochs)
    trial.set_user_attr("epochs_s", round(sum(recorder.epoch_seconds.values()), 4))
    run_id = _trial_run_id(plan, trial, recorder, state)
    if state == TrialState.COMPLETE:
        frozen = study.tell(trial, values)
    else:
        frozen = study.tell(trial, state=state)
    seconds = time.monotonic() - started
    if run_id:
        _annotate_run(plan.tracking_uri, run_id, space, frozen, epochs)
    return TrialOutcome(
        number=trial.number,
        state=state,
        values=list(frozen.values) if frozen.values is not None else None,
        params=params,
        epochs=epochs,
        seconds=seconds,
        error=error,
        retry_of=retry_of,
    )


class EpochPruning(Callback):
    """Report the monitored metric to Optuna after each validation (the dashboard's live
    learning curves); with `prune`, stop a trial its pruner rejects, except after its last
    epoch: a trial that trained all its epochs is COMPLETE.

    (optuna-integration's PyTorchLightningPruningCallback asks the pruner after the last
    epoch too, so in a 1-epoch study every trial below the median ended PRUNED although
    it had trained as long as the others.) Studies refuse DDP, so this is one process.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, prune: bool = True) -> None:
        self.trial = trial
        self.monitor = monitor
        self.prune = prune

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if not self.prune or _last_epoch(trainer) or not self.trial.should_prune():
            return
        raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")


def _last_epoch(trainer) -> bool:
    """Whether this validation ends the training: its last epoch or its last step."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps


def _trial_run_id(
    plan: Plan, trial: optuna.Trial, recorder: TrialRecorder, state: TrialState
) -> str | None:
    """The trial's MLflow run id; when it failed before `fit` started (e.g. building the
    Trainer), searched for by its tags and recorded."""
    if recorder.run_id is not None or state != TrialState.FAIL:
        return recorder.run_id
    client = store.client(plan.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        experiments,
        f"tags.study_name = '{plan.study_name}' AND tags.trial_number = '{trial.number}' "
        "AND tags.study_role = 'trial'",
        max_results=1,
    )
    if not found:
        return None
    trial.set_user_attr("mlflow_run_id", found[0].info.run_id)
    return found[0].info.run_id


def _annotate_run(uri: str, run_id: str, space: SearchSpace, frozen, epochs: int) -> None:
    """The trial's search params, objective values and Optuna state on its MLflow run."""
    from mlflow.entities import Metric, Param, RunTag

    client = store.client(uri)
    now = int(time.time() * 1000)
    metrics = [Metric("trial/epochs", float(epochs), now, 0)]
    if frozen.values is not None:
        for objective, value in zip(space.objectives, frozen.values, strict=True):
            metrics.append(Metric(f"objective/{objective.metric}", float(value), now, 0))
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(f"trial.{k}", str(v)) for k, v in frozen.params.items()],
        tags=[RunTag("trial_state", frozen.state.name)],
    )
