"""Figures, model summary and fit judgement: every catalog run logs its task's figures.

    python -m pytest tests/test_figures.py -q

Each catalog experiment runs for two epochs (s4-mlp: 20 iterations, validating every 10)
on the tiny data into a real SQLite MLflow store (conftest's `catalog_run`: once per session,
shared with test_experiments.py); the PNGs are read back from the store.
The judgement and summary tests use curves and shapes worked out by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow import MlflowClient
from torch import nn

from experiments.tracking.artifacts import mean_loss_per_epoch, read_curves
from experiments.tracking.judgement import judge_fit
from experiments.tracking.model_summary import format_summary, summarize, totals, write_csv
from experiments.training.cli import print_summary
from experiments.training.config import catalog
from models.components import FourBlockCNN, LeNet, ScratchTwoLayerNet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMMON_FIGURES = {"loss_per_epoch", "learning_curves", "confusion_matrix", "per_class_accuracy"}
# The first-layer weights are drawn for networks whose first layer reads the image pixels.
READS_PIXELS = {"s0-mlp", "s1-scratch", "s1-mlp", "s4-mlp"}
# Every catalog experiment: a new YAML in experiments/configs/ is covered without editing this.
EXPERIMENTS = [entry.name for entry in catalog()]


def test_the_figure_expectations_name_catalog_experiments():
    assert EXPERIMENTS and set(EXPERIMENTS) >= READS_PIXELS


def assert_readable_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, (path, len(data))
    image = imread(path)
    height, width = image.shape[:2]
    assert width > 200 and height > 200, (path, image.shape)
    pixels = image.reshape(-1, image.shape[-1]) if image.ndim == 3 else image.reshape(-1, 1)
    # Each colour as one integer (matplotlib reads 8-bit PNG channels as k / 255): a 1-D
    # np.unique, seconds faster per figure than np.unique(pixels, axis=0), the same count.
    levels = np.rint(pixels * 255).astype(np.int64)
    colours = levels @ (256 ** np.arange(levels.shape[1], dtype=np.int64))
    assert np.unique(colours).shape[0] > 10, f"{path} is (nearly) one colour"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_run_logs_its_figures_summary_and_judgement(name, catalog_run, capsys):
    # Trained once per session (conftest's `catalog_run`, shared with test_experiments.py).
    trained = catalog_run(name)
    store, result = trained.uri, trained.result
    assert result.status == "FINISHED"

    client = MlflowClient(store)
    expected = COMMON_FIGURES | ({"first_layer_weights"} if name in READS_PIXELS else set())
    logged = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    assert logged == {f"figures/{figure}.png" for figure in expected}
    local = Path(client.download_artifacts(result.run_id, "figures"))
    for figure in expected:
        assert_readable_png(local / f"{figure}.png")

    summary = Path(client.download_artifacts(result.run_id, "model_summary.txt")).read_text()
    assert summary.splitlines()[-1].startswith("total")
    csv_rows = Path(client.download_artifacts(result.run_id, "model_summary.csv")).read_text()
    assert csv_rows.startswith("name,type,output_shape,params,weights")

    tags = client.get_run(result.run_id).data.tags
    assert "figures_error" not in tags
    assert tags["fit_judgement"] in {"underfitting", "overfitting", "generalizing"}
    assert tags["fit_judgement_reason"]
    assert result.judgement == f"{tags['fit_judgement']} ({tags['fit_judgement_reason']})"
    print_summary(result)
    assert f"fit judgement    {tags['fit_judgement']} (" in capsys.readouterr().out

    curves = read_curves(client, result.run_id)
    val_x = [x for x, _ in curves.points()["val/loss"]]
    if name == "s4-mlp":
        assert (curves.x_label, val_x) == ("training iteration", [10, 20])
    else:
        assert (curves.x_label, val_x) == ("epoch", [1, 2])
        assert curves.epoch_losses()[0] == [1, 2]


def test_epoch_mean_weights_each_logged_interval_by_its_iterations():
    # Validation every 100 iterations, 250 iterations per epoch: the first epoch is logged at
    # iterations 100, 200 and its end (250), the second at 300 and so on (step = iteration - 1).
    def epoch_of(step):
        return step // 250

    points = [(99, 2.0), (199, 1.0), (249, 0.5), (349, 0.4)]
    epochs, losses = mean_loss_per_epoch(points, epoch_of)
    assert epochs == [1, 2]
    assert losses == pytest.approx([(2.0 * 100 + 1.0 * 100 + 0.5 * 50) / 250, 0.4])


# --- fit judgement on constructed curves -----------------------------------------------------


def test_levelled_off_curves_with_a_small_gap_are_generalizing():
    j = judge_fit(
        train_loss=[1.00, 0.50, 0.47],
        val_loss=[0.95, 0.52, 0.49],
        train_acc=[0.70, 0.88, 0.90],
        val_acc=[0.71, 0.87, 0.89],
    )
    assert j.label == "generalizing"
    assert "gap 0.010" in j.reason


def test_rising_validation_loss_while_training_loss_falls_is_overfitting():
    j = judge_fit(
        train_loss=[1.0, 0.5, 0.3, 0.28],
        val_loss=[1.0, 0.6, 0.65, 0.80],
        train_acc=[0.70, 0.85, 0.92, 0.96],
        val_acc=[0.70, 0.82, 0.83, 0.82],
    )
    assert j.label == "overfitting"
    assert "val loss rose 33%" in j.reason and "0.6000" in j.reason


def test_large_accuracy_gap_is_overfitting():
    j = judge_fit(
        train_loss=[0.20, 0.19],
        val_loss=[0.35, 0.36],
        train_acc=[0.97, 0.98],
        val_acc=[0.89, 0.88],
    )
    assert j.label == "overfitting"
    assert "gap 0.100 > 0.05" in j.reason


def test_low_training_accuracy_is_underfitting():
    j = judge_fit(
        train_loss=[1.50, 1.45],
        val_loss=[1.52, 1.47],
        train_acc=[0.40, 0.45],
        val_acc=[0.41, 0.44],
    )
    assert j.label == "underfitting"
    assert "train acc 0.450 < 0.70" in j.reason


def test_training_loss_still_falling_fast_is_underfitting():
    j = judge_fit(
        train_loss=[0.80, 0.50],
        val_loss=[0.75, 0.52],
        train_acc=[0.80, 0.90],
        val_acc=[0.80, 0.89],
    )
    assert j.label == "underfitting"
    assert "still fell 38%" in j.reason


def test_one_point_is_not_enough_and_lengths_must_match():
    assert judge_fit([0.5], [0.5], [0.9], [0.9]).label == "insufficient data"
    with pytest.raises(ValueError, match="same number of points"):
        judge_fit([0.5, 0.4], [0.5], [0.9, 0.9], [0.9, 0.9])


# --- model summary against hand-computed shapes and counts ----------------------------------


def _by_type(rows, kind):
    return [(r.output_shape, r.params, r.weights) for r in rows if r.type == kind]


def test_summary_of_the_s13_cnn():
    rows = summarize(FourBlockCNN(in_channels=1, num_classes=10, input_size=28), (1, 28, 28))
    # Conv k3 s1 p1 keeps the size ((28 - 3 + 2) / 1 + 1 = 28); each pool halves (floor).
    assert _by_type(rows, "Conv2d") == [
        ((32, 28, 28), 32 * 1 * 9 + 32, 32 * 1 * 9),
        ((64, 14, 14), 64 * 32 * 9 + 64, 64 * 32 * 9),
        ((128, 7, 7), 128 * 64 * 9 + 128, 128 * 64 * 9),
        ((256, 3, 3), 256 * 128 * 9 + 256, 256 * 128 * 9),
    ]
    assert [r.output_shape for r in rows if r.type == "MaxPool2d"] == [
        (32, 14, 14),
        (64, 7, 7),
        (128, 3, 3),
        (256, 1, 1),
    ]
    # BatchNorm: scale (counted as weights) and shift (counted as bias), one each per channel.
    assert [(p, w) for _, p, w in _by_type(rows, "BatchNorm2d")] == [
        (64, 32),
        (128, 64),
        (256, 128),
        (512, 256),
    ]
    assert _by_type(rows, "Linear") == [((128,), 256 * 128 + 128, 256 * 128), ((10,), 1290, 1280)]
    assert totals(rows) == (422_986, 421_888)
    assert sum(p.numel() for p in FourBlockCNN().parameters()) == 422_986


def test_summary_of_lenet_and_its_table(tmp_path):
    rows = summarize(LeNet(in_channels=3, num_classes=5, input_size=32), (3, 32, 32))
    # 32 -k5-> 28 -pool-> 14 -k5-> 10 -pool-> 5; 16 * 5 * 5 = 400 features.
    assert _by_type(rows, "Conv2d") == [
        ((6, 28, 28), 6 * 3 * 25 + 6, 450),
        ((16, 10, 10), 16 * 6 * 25 + 16, 2400),
    ]
    assert [r.output_shape for r in rows if r.type == "Flatten"] == [(400,)]
    assert _by_type(rows, "Linear") == [
        ((120,), 400 * 120 + 120, 48_000),
        ((84,), 120 * 84 + 84, 10_080),
        ((5,), 84 * 5 + 5, 420),
    ]
    assert totals(rows) == (61_581, 61_350)
    table = format_summary(rows)
    assert "16x10x10" in table and table.splitlines()[-1].split()[-2:] == ["61,581", "61,350"]
    csv_text = write_csv(rows, tmp_path / "s.csv").read_text().splitlines()
    assert csv_text[-1] == "total,,,61581,61350"


def test_summary_answers_the_theory_items():
    # "a 3x3 conv on RGB with one filter has 27 + 1 parameters"; (5 - 3 + 2*0) / 1 + 1 = 3.
    rows = summarize(nn.Sequential(nn.Conv2d(3, 1, kernel_size=3)), (3, 5, 5))
    assert [(r.output_shape, r.params, r.weights, r.biases) for r in rows] == [
        ((1, 3, 3), 28, 27, 1)
    ]
    # The from-scratch network has no submodules: reported as its two layers.
    scratch = summarize(ScratchTwoLayerNet(784, 100, 10), (1, 28, 28))
    assert [(r.name, r.output_shape, r.params, r.weights) for r in scratch] == [
        ("W1,b1", (100,), 784 * 100 + 100, 78_400),
        ("activation", (100,), 0, 0),
        ("W2,b2", (10,), 100 * 10 + 10, 1_000),
    ]
