"""MLflow-native runs: the trained model as a LoggedModel, the registry, dataset inputs,
system metrics, the experiment's UI kind and telemetry off.

Everything is real: a SQLite store, Lightning training on conftest's tiny Fashion-MNIST,
`mlflow.pytorch.load_model` reading the pt2 file back, the CLI in fresh processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient

from experiments.tracking import store as tracking_store
from experiments.tracking.datasets import split_digest
from experiments.tracking.logged_model import MODEL_NAME
from experiments.training import checkpoints
from tests.helpers import REPO, run_main, tiny


@pytest.fixture
def registered_run(registered_model):
    """conftest's `registered_model` (read-only, trained once per session): one tiny s1-mlp
    run logged with its model, registered as `fashion-mlp`, system metrics sampled every
    0.5 s; (store URI, RunResult, its config)."""
    return registered_model.uri, registered_model.result, registered_model.cfg


def checkpoint_probabilities(cfg, checkpoint: Path, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities of the network rebuilt from the config and the checkpoint."""
    model, _ = cfg.instantiate()
    model.load_state_dict(checkpoints.read_checkpoint(checkpoint)["state_dict"])
    with torch.no_grad():
        return torch.softmax(model.eval().network(x), dim=1)


def test_the_logged_model_loads_without_pickle_and_matches_the_checkpoint(registered_run):
    uri, result, cfg = registered_run
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"models:/{result.model_id}")
    assert result.registered == "fashion-mlp/1"
    # The same model by the registered version's URI.
    registered = mlflow.pytorch.load_model("models:/fashion-mlp/1")

    _, data = cfg.instantiate()
    data.prepare_data()
    data.setup("test")
    for batch in (data.test_x[:5], data.test_x[7:8]):  # a batch of 5 and a batch of 1
        expected = checkpoint_probabilities(cfg, Path(result.best_checkpoint), batch)
        with torch.no_grad():
            got = loaded(batch)
        assert got.shape == (len(batch), 10)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.sum(dim=1), torch.ones(len(batch)))
        with torch.no_grad():
            torch.testing.assert_close(registered(batch), got)

    # pt2: a torch.export archive, no pickled module file; the signature has a dynamic batch.
    logged = MlflowClient(uri).get_logged_model(result.model_id)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{result.model_id}"))
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "data/model.pt2" in files  # MLflow's pt2 file (torch.export.save); pickle: model.pth
    assert not {n for n in files if n.endswith((".pth", ".pkl", ".pickle"))}
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert inputs[0]["tensor-spec"]["shape"] == [-1, 1, 28, 28]
    assert mlmodel["metadata"]["class_names"][0] == "T-shirt/top"
    assert logged.source_run_id == result.run_id and logged.name == MODEL_NAME


def test_the_model_carries_the_test_metrics_and_the_registered_version_its_tags(registered_run):
    uri, result, _ = registered_run
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    experiment = run.info.experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    assert [m.model_id for m in models] == [result.model_id]
    model_metrics = {m.key: m.value for m in models[0].metrics}
    assert model_metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"])
    assert not [k for k in model_metrics if k.startswith(("train/", "val/"))]
    # The run's outputs name the model (the UI's Models tab of the run).
    assert [o.model_id for o in run.outputs.model_outputs] == [result.model_id]

    version = client.get_model_version("fashion-mlp", "1")
    assert version.source == f"models:/{result.model_id}" and version.run_id == result.run_id
    # The LoggedModel names its versions (how the UI's Models tab links the two).
    logged = client.get_logged_model(result.model_id)
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "fashion-mlp", "version": 1}
    ]
    assert version.tags["task"] == "S1.2" and version.tags["dataset"] == "fashion-mnist"
    assert version.tags["test_acc"] == f"{run.data.metrics['test/acc']:.4f}"


def test_the_run_has_its_three_splits_as_dataset_inputs(registered_run):
    uri, result, _ = registered_run
    run = MlflowClient(uri).get_run(result.run_id)
    inputs = {
        tag.value: i.dataset
        for i in run.inputs.dataset_inputs
        for tag in i.tags
        if tag.key == "mlflow.data.context"
    }
    assert sorted(inputs) == ["testing", "training", "validation"]
    assert inputs["training"].name == "fashion-mnist-train"
    lineage = {
        k[len("lineage.") :]: v for k, v in run.data.tags.items() if k.startswith("lineage.")
    }
    assert inputs["testing"].digest == split_digest(lineage, "test")
    assert len({d.digest for d in inputs.values()}) == 3  # three different splits
    source = json.loads(inputs["training"].source)["uri"]
    assert source == Path(lineage["source_path"]).as_uri()
    assert json.loads(inputs["validation"].profile)["num_rows"] == int(lineage["val_size"])


def test_digests_follow_the_files_and_the_split():
    lineage = {"dataset": "fashion-mnist", "md5_train_images": "a", "split_seed": 0}
    same = split_digest(dict(lineage), "train")
    assert split_digest(lineage, "train") == same
    assert split_digest({**lineage, "md5_train_images": "b"}, "train") != same
    assert split_digest({**lineage, "split_seed": 1}, "train") != same
    assert split_digest(lineage, "val") != same


def test_the_run_records_system_metrics_and_the_experiment_opens_on_training_runs(
    registered_run,
):
    uri, result, _ = registered_run
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking_store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_an_experiment_of_an_older_store_gets_the_kind_tag(migrated_store):
    client = MlflowClient(migrated_store)
    old = client.create_experiment("fashion-mnist")  # as the project made them before
    assert tracking_store.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert tracking_store.ensure_experiment(client, migrated_store, "fashion-mnist") == old
    tags = client.get_experiment(old).tags
    assert tags[tracking_store.EXPERIMENT_KIND_TAG] == tracking_store.TRAINING_KIND


def test_run_flags_turn_system_metrics_off_and_refuse_a_bad_interval(store, fashion_dir, capsys):
    # An explicit store: MLflow caches a store per URI string in the process, so the relative
    # default (sqlite:///mlruns/mlflow.db) may still point at another test's working directory.
    code, out, err = run_main(
        "run",
        "s1-mlp",
        *tiny(fashion_dir),
        "--no-system-metrics",
        "--tracking-uri",
        store,
        capsys=capsys,
    )
    assert code == 0, err
    assert "Model: models:/m-" in out
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("fashion-mnist").experiment_id])
    assert not [k for k in run.data.metrics if k.startswith("system/")]

    code, _, err = run_main("run", "s1-mlp", "--system-metrics-interval", "0", capsys=capsys)
    assert code == 2
    assert "'0' is not a number of seconds above 0" in err


TELEMETRY_PROBE = (
    "import os, sys; from experiments.__main__ import main; main(['list']); "
    "from mlflow.telemetry.utils import is_telemetry_disabled; "
    "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], is_telemetry_disabled())"
)


def test_commands_turn_mlflow_telemetry_off_unless_the_user_opts_in(tmp_path):
    """The environment every command (and the MLflow servers `ui`/`server` start) runs in."""
    import subprocess

    def probe(**extra: str) -> str:
        # No CI or pytest variables: MLflow would switch telemetry off for those itself.
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **extra}
        out = subprocess.run(
            [sys.executable, "-c", TELEMETRY_PROBE], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()[-1]

    assert probe() == "true True"
    assert probe(MLFLOW_DISABLE_TELEMETRY="false") == "false False"  # the documented opt-in


def test_ui_tags_the_stores_experiments_and_names_their_runs_pages(migrated_store):
    from experiments.services import ui

    client = MlflowClient(migrated_store)
    old = client.create_experiment("fashion-mnist")  # an older store's, without the tag
    client.create_run(old)
    client.create_experiment("empty")  # no runs: not listed
    assert ui.training_experiments(migrated_store) == [("fashion-mnist", old)]
    tags = client.get_experiment(old).tags
    assert tags[tracking_store.EXPERIMENT_KIND_TAG] == tracking_store.TRAINING_KIND
