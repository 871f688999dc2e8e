"""What a run records besides its metrics: the output callbacks its purpose chooses.

    python -m pytest tests/test_outputs.py             # a run with a chosen list of outputs
    python -m pytest tests/test_outputs.py -m slow     # a study: trials cheap, the best complete

Real runs on the tiny Fashion-MNIST into real SQLite stores; the study is the real command.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from experiments.errors import ConfigError
from experiments.search import cli as search
from experiments.training.config import parse
from experiments.training.output_callbacks import RunOutput
from experiments.training.outputs import RunOutputs
from experiments.training.runner import run_experiment
from tests.helpers import tiny


class Broken(RunOutput):
    """An output whose writing fails, as a figure that cannot be drawn would."""

    name, what = "broken", "the broken output"

    def write(self, client, run_id, trainer, pl_module) -> None:
        raise ValueError("cannot draw this")


def test_a_run_writes_exactly_the_outputs_it_names(migrated_store, fashion_dir, capsys):
    outputs = RunOutputs(names=("checkpoint", "model_summary"), system_metrics_s=None)
    cfg = parse("s1-mlp", tiny(fashion_dir, epochs=2))
    result = run_experiment(cfg, migrated_store, outputs=outputs, callbacks=[Broken()])

    # A failing output is a warning and a tag; the run still ends FINISHED.
    assert result.status == "FINISHED"
    client = MlflowClient(migrated_store)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["broken_error"] == "ValueError: cannot draw this"
    warning = f"warning: run {result.run_id}: the broken output not logged: ValueError"
    assert warning in capsys.readouterr().err
    # The checkpoint and the summary, beside the config every run logs; nothing else.
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert artifacts == {"checkpoints", "config.yaml", "model_summary.txt", "model_summary.csv"}
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoints")] == [
        "checkpoints/best.ckpt"
    ]
    assert "fit_judgement" not in run.data.tags and result.judgement is None
    assert result.model_id is None
    assert client.search_logged_models(experiment_ids=[run.info.experiment_id]) == []
    assert "test/acc" in run.data.metrics and "val/acc" in run.data.metrics


def test_an_unknown_output_is_refused_with_the_names_allowed():
    with pytest.raises(ConfigError) as refused:
        RunOutputs(names=("checkpoint", "figure"))
    assert str(refused.value) == (
        "unknown run output 'figure'; allowed: warnings_log, checkpoint, judgement, figures, "
        "model_summary, model; did you mean figures?"
    )


@pytest.mark.slow
def test_trials_log_their_checkpoint_and_the_best_trial_gets_the_rest(store, fashion_dir):
    argv = ["lr", "--trials", "3", "--pruner", "none", "--tracking-uri", store]
    assert search.main([*argv, *tiny(fashion_dir, epochs=2)]) == 0

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("fashion-mnist").experiment_id
    runs = client.search_runs([experiment], "tags.study_name = 'lr-s1-mlp'")
    (parent,) = [r for r in runs if r.data.tags["study_role"] == "parent"]
    trials = [r for r in runs if r.data.tags["study_role"] == "trial"]
    best = parent.data.tags["best_run_id"]
    assert len(trials) == 3 and best in {t.info.run_id for t in trials}
    for trial in trials:
        artifacts = {a.path for a in client.list_artifacts(trial.info.run_id)}
        assert {"checkpoints", "config.yaml"} <= artifacts
        if trial.info.run_id == best:  # its figures, summary, judgement and model, at the end
            assert {"figures", "model_summary.txt", "confusion_matrix.csv"} <= artifacts
            assert "fit_judgement" in client.get_run(best).data.tags
        else:
            assert artifacts & {"figures", "model_summary.txt", "confusion_matrix.csv"} == set()
            assert "fit_judgement" not in trial.data.tags
        assert not [k for k in trial.data.metrics if k.startswith("system/")]
    (model,) = client.search_logged_models(experiment_ids=[experiment])
    assert model.source_run_id == best == parent.data.tags["best_model_run_id"]
