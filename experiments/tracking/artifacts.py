"""Figures, model summary and fit judgement of a finished run, logged to its MLflow run.

Called once the run is tested by its output callbacks (experiments/training/outputs.py:
`Figures`, `ModelSummary`, `FitJudgement`), which a plain run has all of. The artifacts and tags (their names are relied upon by reports and tests) are listed in
docs/tracking.md (Figures and fit judgement).

Steps and epochs: Lightning logs each point with MLflow step = (iterations completed - 1),
and an ``epoch`` metric at the same step, which maps every point to its epoch.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.tracking import figures
from experiments.tracking.judgement import Judgement, judge_fit
from experiments.tracking.model_summary import format_summary, summarize, write_csv
from experiments.tracking.store import metric_history

__all__ = [
    "CONFUSION_CSV",
    "RunCurves",
    "confusion_csv",
    "log_figures",
    "log_judgement",
    "log_model_summary",
    "mean_loss_per_epoch",
    "read_confusion_csv",
    "read_curves",
]

CURVE_KEYS = ("train/loss", "val/loss", "train/acc", "val/acc")
#: The test confusion matrix as counts (rows = true class), beside figures/confusion_matrix.png.
CONFUSION_CSV = "confusion_matrix.csv"
_CONFUSION_CORNER = "true \\ predicted"


def confusion_csv(matrix: Any, class_names: list[str]) -> str:
    """The confusion matrix as CSV text: header (corner, class names), one row per true class."""
    rows = [[round(float(v)) for v in row] for row in matrix.tolist()]
    if len(rows) != len(class_names) or any(len(row) != len(class_names) for row in rows):
        raise ValueError(f"confusion matrix is not {len(class_names)}x{len(class_names)}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([_CONFUSION_CORNER, *class_names])
    for name, row in zip(class_names, rows, strict=True):
        writer.writerow([name, *row])
    return out.getvalue()


def read_confusion_csv(text: str) -> tuple[list[str], list[list[int]]]:
    """(class names, counts with rows = true class) from `confusion_csv` text; ValueError
    naming what is wrong when the text is not such a table."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0][:1] != [_CONFUSION_CORNER]:
        raise ValueError(f"{CONFUSION_CSV}: the first cell must be {_CONFUSION_CORNER!r}")
    names = rows[0][1:]
    body = rows[1:]
    if [row[0] for row in body] != names or any(len(row) != len(names) + 1 for row in body):
        raise ValueError(f"{CONFUSION_CSV}: expected one row per class, in the header's order")
    return names, [[int(cell) for cell in row[1:]] for row in body]


class _EpochOf:
    """Epoch (0-based) of an MLflow step, from the ``epoch`` metric logged alongside."""

    def __init__(self, epoch_points: list[tuple[int, float]]) -> None:
        self.steps = [s for s, _ in epoch_points]
        self.epochs = [int(e) for _, e in epoch_points]

    def __call__(self, step: int) -> int:
        i = bisect.bisect_right(self.steps, step) - 1
        return self.epochs[i] if i >= 0 else 0


def mean_loss_per_epoch(
    train_loss: list[tuple[int, float]], epoch_of: Any
) -> tuple[list[int], list[float]]:
    """Mean training loss of each epoch (1-based) from interval means logged at MLflow steps.

    A point covers the iterations since the previous point; every epoch end logs one, so
    intervals never straddle epochs and the iteration-weighted mean is the epoch mean
    (exact up to a smaller last batch). One point per epoch is the usual, trivial case.
    """
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    done = 0
    for step, value in train_loss:
        iterations = max(step + 1 - done, 1)
        done = step + 1
        epoch = epoch_of(step)
        sums[epoch] += value * iterations
        counts[epoch] += iterations
    epochs = sorted(sums)
    return [e + 1 for e in epochs], [sums[e] / counts[e] for e in epochs]


def _step_driven(params: dict[str, str], val_steps: list[int], epoch_of: Any) -> bool:
    # An integer val_check_interval means "validate every N training batches" (S4: 100).
    interval = params.get("trainer.val_check_interval", "")
    if interval.isdigit():
        return True
    val_epochs = [epoch_of(s) for s in val_steps]
    return len(set(val_epochs)) != len(val_epochs)


@dataclass
class RunCurves:
    """A run's train/val loss and accuracy histories as (MLflow step, value) pairs."""

    raw: dict[str, list[tuple[int, float]]]
    epoch_of: Any
    #: validation every N iterations (x axis: training iteration) rather than per epoch
    step_driven: bool

    @property
    def x_label(self) -> str:
        return "training iteration" if self.step_driven else "epoch"

    @property
    def has_validation(self) -> bool:
        return bool(self.raw["val/loss"])

    def points(self) -> dict[str, list[tuple[float, float]]]:
        """Curves keyed like the metrics, x = epoch (1-based) or iterations completed."""

        def x(step: int) -> float:
            return step + 1 if self.step_driven else self.epoch_of(step) + 1

        return {key: [(x(s), v) for s, v in pts] for key, pts in self.raw.items() if pts}

    def aligned(self) -> list[list[float]]:
        """The four curves at the steps where all four were logged (the validation points)."""
        by_key = {key: dict(pts) for key, pts in self.raw.items()}
        steps = [s for s, _ in self.raw["val/loss"] if all(s in by_key[k] for k in CURVE_KEYS)]
        return [[by_key[key][s] for s in steps] for key in CURVE_KEYS]

    def epoch_losses(self) -> tuple[list[int], list[float]]:
        return mean_loss_per_epoch(self.raw["train/loss"], self.epoch_of)


def read_curves(client: Any, run_id: str, params: dict[str, str] | None = None) -> RunCurves:
    """The run's curves from MLflow, with each step mapped to its epoch."""
    raw = {key: metric_history(client, run_id, key) for key in CURVE_KEYS}
    epoch_of = _EpochOf(metric_history(client, run_id, "epoch"))
    if params is None:
        params = client.get_run(run_id).data.params
    return RunCurves(raw, epoch_of, _step_driven(params, [s for s, _ in raw["val/loss"]], epoch_of))


class _Drawer:
    """Draws figures, collecting the errors: a figure must not fail a finished run."""

    def __init__(self, out: Path, name: str) -> None:
        self.out = out  # the figures/ folder
        self.name = name  # "<experiment> (<task>)", the start of every title
        self.errors: list[str] = []

    def __call__(self, what: str, plot: Any, *args: Any, **kwargs: Any) -> None:
        try:
            plot(*args, **kwargs)
        except Exception as exc:  # a figure must not turn a finished run into a failed one
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")


def log_judgement(client: Any, run_id: str, curves: RunCurves) -> Judgement | None:
    """Judge the fit from the validation points and tag the run; None without any."""
    from mlflow.entities import RunTag

    if not curves.has_validation:
        return None
    judgement = judge_fit(*curves.aligned())
    client.log_batch(
        run_id,
        tags=[
            RunTag("fit_judgement", judgement.label),
            RunTag("fit_judgement_reason", judgement.reason),
        ],
    )
    return judgement


def _draw_curves(draw: _Drawer, curves: RunCurves, judgement: Judgement | None) -> None:
    """Loss per epoch (S0.2, S0.3) and, with validation points, the learning curves."""
    if curves.raw["train/loss"]:
        epochs, losses = curves.epoch_losses()
        draw(
            "loss_per_epoch",
            figures.plot_loss_per_epoch,
            epochs,
            losses,
            draw.out / "loss_per_epoch.png",
            f"{draw.name}: average training loss per epoch",
        )
    if curves.has_validation:
        draw(
            "learning_curves",
            figures.plot_learning_curves,
            curves.points(),
            draw.out / "learning_curves.png",
            f"{draw.name}: learning curves",
            x_label=curves.x_label,
            note=f"fit judgement: {judgement}",
        )


def _draw_test_results(draw: _Drawer, model: Any, class_names: list[str]) -> None:
    """The test confusion matrix (picture and counts) and per-class accuracy (S2), when the
    model kept them."""
    confusion = getattr(model, "confusion_matrix", None)
    if confusion is not None:
        draw(
            "confusion_matrix.csv",
            lambda: (draw.out.parent / CONFUSION_CSV).write_text(
                confusion_csv(confusion, class_names)
            ),
        )
        draw(
            "confusion_matrix",
            figures.plot_confusion_matrix,
            confusion,
            class_names,
            draw.out / "confusion_matrix.png",
            f"{draw.name}: test confusion matrix (rows = true class)",
        )
    per_class = getattr(model, "per_class_accuracy", None)
    if per_class is not None:
        overall = None
        if confusion is not None and float(confusion.sum()) > 0:
            overall = float(confusion.trace()) / float(confusion.sum())
        draw(
            "per_class_accuracy",
            figures.plot_per_class_accuracy,
            per_class,
            class_names,
            draw.out / "per_class_accuracy.png",
            f"{draw.name}: test accuracy per class",
            overall=overall,
        )


def _draw_first_layer(draw: _Drawer, model: Any, input_shape: tuple[int, ...]) -> None:
    """One tile per hidden unit, for a network whose first layer reads the pixels (S4)."""
    network = getattr(model, "network", None)
    layer = getattr(network, "first_layer", None)  # an MLP's first Linear
    scratch_w1 = getattr(network, "first_layer_weight", None)  # the from-scratch network's
    weight = layer.weight if hasattr(layer, "weight") else scratch_w1
    if weight is not None and weight.shape[-1] == math.prod(input_shape):
        draw(
            "first_layer_weights",
            figures.plot_first_layer_weights,
            weight,
            input_shape,
            draw.out / "first_layer_weights.png",
            f"{draw.name}: first-layer weights",
        )


def log_model_summary(client: Any, run_id: str, model: Any, datamodule: Any) -> None:
    """model_summary.txt and .csv of the model's network (output shape and parameters per
    layer), logged at the run's artifact root."""
    network = getattr(model, "network", None)
    if network is None:
        return
    input_shape = tuple(getattr(model, "input_shape", None) or datamodule.input_shape)
    rows = summarize(network, input_shape)
    header = f"{type(network).__name__} on input {'x'.join(map(str, input_shape))}\n"
    with tempfile.TemporaryDirectory(prefix="summary-") as tmp:
        root = Path(tmp)
        (root / "model_summary.txt").write_text(header + format_summary(rows))
        write_csv(rows, root / "model_summary.csv")
        client.log_artifacts(run_id, str(root))


def log_figures(
    client: Any, run_id: str, model: Any, datamodule: Any, curves: RunCurves | None = None
) -> None:
    """Draw and log the figures (and the confusion matrix's counts) of a tested run, from
    its `curves` (read from MLflow when None). A figure that cannot be drawn does not stop
    the others: the errors are printed and kept in the ``figures_error`` tag.
    """
    # Few MLflow calls on purpose: each is a round trip (a SQLite transaction or an HTTP
    # request), so the run is read once and the files go in one upload.
    run = client.get_run(run_id)
    tags = run.data.tags
    name = f"{tags.get('experiment', run_id)} ({tags.get('task', '?')})"
    if curves is None:
        curves = read_curves(client, run_id, run.data.params)
    judgement = judge_fit(*curves.aligned()) if curves.has_validation else None
    class_names = list(datamodule.class_names)
    input_shape = tuple(getattr(model, "input_shape", None) or datamodule.input_shape)
    with tempfile.TemporaryDirectory(prefix="figures-") as tmp:
        root = Path(tmp)  # uploaded as the run's artifact root: figures/ and the CSV
        out = root / "figures"
        out.mkdir()
        draw = _Drawer(out, name)
        _draw_curves(draw, curves, judgement)
        _draw_test_results(draw, model, class_names)
        _draw_first_layer(draw, model, input_shape)
        if not any(out.iterdir()):
            out.rmdir()
        if any(root.iterdir()):
            client.log_artifacts(run_id, str(root))
    if draw.errors:
        message = "; ".join(draw.errors)
        print(f"warning: run {run_id}: {message}", file=sys.stderr)
        client.set_tag(run_id, "figures_error", message[:5000])
