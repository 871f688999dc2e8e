"""Using a trained model: `evaluate`, `predict` and `serve` (experiments/inference/).

    python -m pytest tests/test_inference.py            # evaluate, predict, bad input
    python -m pytest tests/test_inference.py -m slow    # mlflow models serve over HTTP

Real components: a SQLite store holding a tiny s1-mlp run registered as `fashion-mlp` (conftest's
`registered_model`, trained once per session; each test works on its own copy),
Lightning's test loop, MLflow's pt2 model loaded back, PNG files written with Pillow, and
for the slow test a real `mlflow models serve` process on a loopback port.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from datamodules.synthetic import write_fashion_mnist
from experiments.__main__ import main as cli
from experiments.training.trained import load_run_model
from tests.helpers import child_env, copy_store, free_port, start_cli, stop_group

PORTS = range(5560, 5590)  # this file's share of the project's test port range


@pytest.fixture(scope="module")
def test_split(registered_model):
    """The set-up datamodule of conftest's `registered_model` (its test split)."""
    _, data = registered_model.cfg.instantiate()
    data.prepare_data()
    data.setup("test")
    return data


@pytest.fixture
def registered(registered_model, test_split, tmp_path):
    """This test's own copy of the store of conftest's `registered_model` (a tiny finished
    s1-mlp run whose model is `fashion-mlp` version 1, trained once per session);
    (the copy's URI, RunResult, set-up datamodule)."""
    uri = copy_store(registered_model.uri, tmp_path / "store")
    return uri, registered_model.result, test_split


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


def evaluation_runs(uri: str) -> list:
    return [r for r in all_runs(uri) if r.data.tags.get("kind") == "evaluation"]


def model_classes(uri: str, model_id: str, x: torch.Tensor) -> list[int]:
    """The classes the logged model itself gives `x` (normalized), called directly."""
    mlflow.set_tracking_uri(uri)
    with torch.no_grad():
        return mlflow.pytorch.load_model(f"models:/{model_id}")(x).argmax(dim=1).tolist()


def garment_on_black(data, index: int) -> np.ndarray:
    """Test image `index` as uint8 pixels (28x28), its border black as in Fashion-MNIST (the
    generated images have no background of their own)."""
    x = data.test_x[index, 0] * data.std[0] + data.mean[0]
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pixels[[0, -1], :] = 0
    pixels[:, [0, -1]] = 0
    return pixels


def normalized(data, pixels: list[np.ndarray]) -> torch.Tensor:
    """uint8 images -> the model's input (N, 1, 28, 28), normalized as the datamodule does."""
    x = torch.from_numpy(np.stack(pixels)).float()[:, None] / 255.0
    return (x - data.mean[0]) / data.std[0]


def test_evaluate_reproduces_the_runs_test_accuracy_as_an_evaluation_run(registered, capsys):
    uri, result, _ = registered
    assert cli(["evaluate", "models:/fashion-mlp/1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"test/acc         {result.test_metrics['test/acc']:.4f}" in out
    assert "per class:" in out and "Ankle boot" in out

    (evaluation,) = evaluation_runs(uri)
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["evaluated_run_id"] == result.run_id
    assert evaluation.data.tags["evaluated_model_id"] == result.model_id
    assert evaluation.data.tags["experiment"] == "s1-mlp"
    assert evaluation.info.run_name == "evaluate-s1-mlp-fashion-mnist"
    assert round(evaluation.data.metrics["test/acc"], 4) == round(
        result.test_metrics["test/acc"], 4
    )
    client = MlflowClient(uri)
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id, "figures")}
    assert {"figures/confusion_matrix.png", "figures/per_class_accuracy.png"} <= artifacts
    # Linked to the model (a model input) and to the test split (a dataset input).
    run = client.get_run(evaluation.info.run_id)
    assert [m.model_id for m in run.inputs.model_inputs] == [result.model_id]
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["fashion-mnist-test"]


def test_evaluate_on_other_data_logs_a_second_evaluation_run(registered, tmp_path, capsys):
    uri, result, _ = registered
    other = write_fashion_mnist(tmp_path / "other", n_train=300, n_test=120, seed=7)
    before = len(evaluation_runs(uri))
    argv = ["evaluate", result.run_id, "--tracking-uri", uri, "--data.data_dir", str(other)]
    assert cli(argv) == 0
    assert "(120 images)" in capsys.readouterr().out
    runs = evaluation_runs(uri)
    assert len(runs) == before + 1
    newest = max(runs, key=lambda r: r.info.start_time)
    assert newest.data.tags["lineage.test_size"] == "120"
    assert newest.data.tags["lineage.source_path"].startswith(str(other))


def test_predict_gives_the_models_own_classes_for_files_and_test_images(
    registered, tmp_path, capsys
):
    uri, result, data = registered
    light_on_dark = tmp_path / "light_on_dark.png"
    dark_on_light = tmp_path / "dark_on_light.png"
    images = [garment_on_black(data, i) for i in range(4)]
    Image.fromarray(images[0]).save(light_on_dark)
    Image.fromarray(255 - images[1]).save(dark_on_light)  # as a drawing on white paper
    batch = tmp_path / "batch.npy"
    np.save(batch, np.stack(images[2:]))

    argv = ["predict", "models:/fashion-mlp/1", str(light_on_dark), str(dark_on_light)]
    assert cli([*argv, str(batch), "--from-test", "5", "--json", "--tracking-uri", uri]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows[:4]] == [
        str(light_on_dark),
        f"{dark_on_light} (inverted)",
        f"{batch}[0]",
        f"{batch}[1]",
    ]
    assert [r["input"] for r in rows[4:]] == [f"test[{i}]" for i in range(5)]
    for row in rows:  # the schema of --json
        assert set(row) <= {"input", "top", "label"} and len(row["top"]) == 3
        for top in row["top"]:
            assert set(top) == {"class", "index", "probability"}
            assert top["class"] == data.class_names[top["index"]]
        probabilities = [t["probability"] for t in row["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
    assert [r["label"] for r in rows[4:]] == [data.class_names[int(y)] for y in data.test_y[:5]]

    got = [r["top"][0]["index"] for r in rows]
    assert got[4:] == model_classes(uri, result.model_id, data.test_x[:5])
    # The files: the model's classes for the same four images (the dark-on-light one
    # inverted back by --invert auto).
    assert got[:4] == model_classes(uri, result.model_id, normalized(data, images))

    assert (
        cli(["predict", result.run_id, "--from-test", "2", "--top-k", "1", "--tracking-uri", uri])
        == 0
    )
    table = capsys.readouterr().out
    assert table.count("  1. ") == 2 and "true class:" in table


def test_predict_from_a_local_checkpoint_with_its_config(registered, tmp_path, capsys):
    uri, result, data = registered
    client = MlflowClient(uri)
    folder = tmp_path / "model"
    folder.mkdir()
    client.download_artifacts(result.run_id, "config.yaml", str(folder))
    checkpoint = client.download_artifacts(result.run_id, "checkpoints/best.ckpt", str(folder))
    argv = ["predict", checkpoint, "--config", str(folder / "config.yaml"), "--from-test", "5"]
    assert cli([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["index"] for r in rows] == model_classes(
        uri, result.model_id, data.test_x[:5]
    )


def bad_inputs(uri: str, run_id: str, tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, what the error says) for every kind of bad input."""
    (tmp / "notes.png").write_text("not an image")
    np.save(tmp / "small.npy", np.zeros((5, 5), dtype=np.uint8))
    (tmp / "lonely.ckpt").write_bytes(b"")
    store = ["--tracking-uri", uri]
    return [
        (["evaluate", "0123456789abcdef0123456789abcdef", *store], "no run 0123456789abcdef"),
        (["evaluate", "42", *store], "is not a model reference"),
        (["evaluate", "models:/fashion-mpl/1", *store], "did you mean fashion-mlp?"),
        (["evaluate", "models:/fashion-mlp/7", *store], "has no version 7; its versions are 1"),
        (["predict", "models:/fashion-mlp/1", str(tmp / "notes.png"), *store], "not an image"),
        (["predict", "models:/fashion-mlp/1", str(tmp / "missing.png"), *store], "no such file"),
        (
            ["predict", "models:/fashion-mlp/1", str(tmp / "small.npy"), *store],
            "an array of shape (5, 5) cannot be read as 1x28x28 images",
        ),
        (["evaluate", str(tmp / "lonely.ckpt")], "no config.yaml beside the checkpoint"),
        (
            [
                "evaluate",
                run_id,
                *store,
                "--data.class_path",
                "datamodules.CIFAR100SuperclassDataModule",
                "--data.download",
                "false",
            ],
            "give 5 classes of input 3x32x32; the model was trained on 10 classes",
        ),
        (["evaluate", run_id, *store, "--model.lr", "1"], "only --data.KEY VALUE overrides"),
        (["predict", run_id, *store], "nothing to predict"),
        (["serve", "models:/nope/1", *store], "no registered model 'nope'"),
    ]


def test_bad_input_exits_2_with_a_message_and_creates_no_run(registered, tmp_path, capsys):
    uri, result, _ = registered
    before = {r.info.run_id for r in all_runs(uri)}
    for argv, message in bad_inputs(uri, result.run_id, tmp_path):
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
    assert {r.info.run_id for r in all_runs(uri)} == before


def test_a_run_without_its_checkpoint_is_refused(registered, tmp_path, capsys):
    uri, result, _ = registered
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    # A run with the config but no checkpoint, as a failed upload would leave it.
    other = client.create_run(run.info.experiment_id)
    client.log_text(
        other.info.run_id,
        (Path(client.download_artifacts(result.run_id, "config.yaml", str(tmp_path)))).read_text(),
        "config.yaml",
    )
    client.set_terminated(other.info.run_id, "FINISHED")
    assert cli(["evaluate", other.info.run_id, "--tracking-uri", uri]) == 2
    assert "has no checkpoint among its artifacts" in capsys.readouterr().err


# --- slow: a real model server ---------------------------------------------------------


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations_with_class_probabilities(registered, tmp_path):
    uri, result, data = registered
    port = free_port(PORTS)
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "experiments", "serve", "models:/fashion-mlp/1"),
            *("--port", str(port), "--tracking-uri", uri),
        ],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the model server did not start: {server.stderr.read()[-2000:]}")
                time.sleep(1)
        x = data.test_x[:4]
        answer = post_json(f"http://127.0.0.1:{port}/invocations", {"inputs": x.tolist()})
        served = torch.tensor(answer["predictions"])
        mlflow.set_tracking_uri(uri)
        with torch.no_grad():
            direct = mlflow.pytorch.load_model(f"models:/{result.model_id}")(x)
        torch.testing.assert_close(served, direct, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(served.sum(dim=1), torch.ones(4))
    finally:
        stop_group(server, timeout=20)


# --- never unpickle; a version's own weights; images too large to decode --------------


class PicklePayload(torch.nn.Module):
    """A module whose unpickling writes `marker`: what a planted pickle-format model runs."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.linear = torch.nn.Linear(2, 2)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "the pickled code ran"))


@pytest.fixture(scope="module")
def planted(registered_model, test_split, tmp_path_factory):
    """A copy of the `registered` store where `fashion-mlp` gains version 2, a pickle-format
    model whose unpickling writes a marker file, and version 3, the run's network logged
    (pt2) with its last layer zeroed; (store URI, marker path, version 3's expected acc)."""
    from experiments.tracking import logged_model

    result, data = registered_model.result, test_split
    root = tmp_path_factory.mktemp("planted")
    copy = copy_store(registered_model.uri, root)
    marker = root / "MARKER"
    mlflow.set_tracking_uri(copy)
    with mlflow.start_run(
        experiment_id=MlflowClient(copy).get_run(result.run_id).info.experiment_id
    ):
        info = mlflow.pytorch.log_model(
            PicklePayload(str(marker)),
            name="model",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    mlflow.register_model(f"models:/{info.model_id}", "fashion-mlp")
    _, model, _ = load_run_model(MlflowClient(copy), result.run_id)
    last = [m for m in model.network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3] = 1.0  # every image is class 3
    zeroed = logged_model.log_trained_model(
        copy, result.run_id, model.network, data, task="S1", test_step=0
    )
    logged_model.register(copy, "fashion-mlp", zeroed.model_id, {})
    expected = float((data.test_y == 3).float().mean())
    assert not marker.exists()
    return copy, marker, expected


def test_a_pickle_format_version_is_refused_by_name_and_never_unpickled(planted, capsys):
    uri, marker, _ = planted
    store = ["--tracking-uri", uri]
    for argv in (
        ["evaluate", "models:/fashion-mlp/2", *store],
        ["predict", "models:/fashion-mlp/2", "--from-test", "2", *store],
        ["serve", "models:/fashion-mlp/2", *store],
    ):
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert "serialization format is 'pickle' (model.pth" in err, (argv, err)
        assert "Traceback" not in err
    assert not marker.exists()
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_evaluate_scores_the_named_versions_own_weights(planted, capsys):
    uri, _, expected = planted
    assert cli(["evaluate", "models:/fashion-mlp/3", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"test/acc         {expected:.4f}" in out, out


@pytest.fixture(scope="module")
def huge_pngs(tmp_path_factory) -> dict[int, Path]:
    """Valid greyscale PNGs of 20000x20000 and 12000x12000 black pixels, 389 KB and 140 KB on
    disk (400 MB and 144 MB decoded)."""
    folder = tmp_path_factory.mktemp("huge")

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    found = {}
    for side in (20000, 12000):
        pack = zlib.compressobj(9)
        row = bytes(side + 1)  # filter byte + one row of black pixels
        idat = b"".join([*(pack.compress(row) for _ in range(side)), pack.flush()])
        header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
        found[side] = folder / f"{side}.png"
        found[side].write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", idat)
            + chunk(b"IEND", b"")
        )
    return found


def test_images_above_the_pixel_limit_are_refused_before_decoding(registered, huge_pngs, capsys):
    uri, _, _ = registered
    for side, path in huge_pngs.items():
        assert cli(["predict", "models:/fashion-mlp/1", str(path), "--tracking-uri", uri]) == 2
        err = capsys.readouterr().err
        assert f"{path}: the image is too large to read" in err, err
        assert "at most 16,777,216 pixels (4096x4096)" in err
        assert "Traceback" not in err and "DecompressionBomb" not in err
        if side == 12000:  # below PIL's own guard: refused from its header by the project
            assert "12000x12000 pixels" in err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_model_server_stops_when_serve_is_killed(registered, tmp_path, signum):
    from tests.helpers.servers import assert_port_closes_when_killed

    uri, _, _ = registered
    port = free_port(PORTS)
    proc = start_cli(
        "serve", "models:/fashion-mlp/1", "--port", str(port), "--tracking-uri", uri, cwd=tmp_path
    )
    assert_port_closes_when_killed(proc, port, signum)
