"""PNG figures of a run: loss per epoch, learning curves, confusion matrix, per-class
accuracy and first-layer weights as image tiles.

Every function takes plain data (sequences, arrays, tensors) and writes one PNG to
``path``; none of them reads MLflow: `experiments.tracking.artifacts` does (the figures of
every run: docs/tracking.md, Figures and fit judgement).

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot: no global
figure registry, no GUI backend, safe in threads and in headless CI.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "MAX_WEIGHT_TILES",
    "per_class_accuracy_figure",
    "plot_confusion_matrix",
    "plot_first_layer_weights",
    "plot_learning_curves",
    "plot_loss_per_epoch",
    "plot_per_class_accuracy",
]

#: At most this many hidden units are drawn as weight tiles; the title says when some were left out.
MAX_WEIGHT_TILES = 100
DPI = 100


def _array(values: Any) -> np.ndarray:
    """A float numpy array from a list, numpy array or (CPU or GPU) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": it draws the figure twice; tight_layout (one pass) is enough.
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def plot_loss_per_epoch(
    epochs: Sequence[float],
    losses: Sequence[float],
    path: str | Path,
    title: str,
) -> Path:
    """Average training loss of each epoch against the epoch number (S0.2, S0.3)."""
    x, y = _array(epochs), _array(losses)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(
            f"epochs and losses must be non-empty 1-D sequences of equal length, "
            f"got {x.shape} and {y.shape}"
        )
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.plot(x, y, marker="o", color="tab:blue", label="training loss (epoch mean)")
    # Values printed on the points, while there are few enough to stay readable.
    for xi, yi in zip(x, y, strict=True) if x.size <= 20 else ():
        ax.annotate(
            f"{yi:.3f}",
            (xi, yi),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss (cross-entropy)")
    ax.set_title(title)
    # Whole epochs only: "epoch 1.5" would be meaningless for an epoch mean.
    ax.set_xticks(x if x.size <= 20 else np.linspace(x.min(), x.max(), 11).round())
    ax.margins(x=0.08, y=0.15)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


Points = Sequence[tuple[float, float]]


def _xy(points: Points | None) -> tuple[np.ndarray, np.ndarray]:
    if not points:
        return np.empty(0), np.empty(0)
    arr = _array(points)
    return arr[:, 0], arr[:, 1]


def plot_learning_curves(
    history: Mapping[str, Points],
    path: str | Path,
    title: str,
    *,
    x_label: str = "epoch",
    note: str | None = None,
) -> Path:
    """Train and validation loss (left) and accuracy (right), side by side (S1.2, S1.3, S4).

    ``history`` maps ``"train/loss"``, ``"val/loss"``, ``"train/acc"`` and ``"val/acc"`` to
    ``(x, value)`` pairs, x being the epoch or the training iteration (``x_label`` says which).
    Missing keys are left out of the figure. ``note`` (e.g. the fit judgement) goes under
    the title.
    """
    panels = (("loss", "loss (cross-entropy)"), ("acc", "accuracy"))
    if not any(history.get(f"{split}/{m}") for m, _ in panels for split in ("train", "val")):
        raise ValueError(
            f"history has no points under train/loss, val/loss, train/acc or val/acc "
            f"(keys: {sorted(history)})"
        )
    fig = Figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 2)
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for split, colour, style in (("train", "tab:blue", "-"), ("val", "tab:orange", "--")):
            x, y = _xy(history.get(f"{split}/{metric}"))
            if x.size == 0:
                continue
            name = "train" if split == "train" else "validation"
            ax.plot(x, y, style, marker="o", markersize=4, color=colour, label=name)
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, iterations: whole
        ax.set_ylabel(label)
        ax.set_title(f"{'Loss' if metric == 'loss' else 'Accuracy'}")
        ax.grid(alpha=0.3)
        ax.margins(x=0.05, y=0.1)
        if ax.lines:
            ax.legend()
    if note:
        title = f"{title}\n" + "\n".join(textwrap.wrap(note, 140))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Any, class_names: Sequence[str], path: str | Path, title: str
) -> Path:
    """Counts of (true class, predicted class); rows are the true class (S2)."""
    counts = _array(matrix)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix must be {n}x{n} for {n} class names, got shape {counts.shape}")
    size = max(5.5, 0.55 * n + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test images")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    # Dark cells get white text so every count stays readable.
    threshold = counts.max() / 2 if counts.size and counts.max() > 0 else 0.5
    for (i, j), value in np.ndenumerate(counts):
        colour = "white" if value > threshold else "black"
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=9, color=colour)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_accuracy(
    accuracies: Any,
    class_names: Sequence[str],
    path: str | Path,
    title: str,
    *,
    overall: float | None = None,
) -> Path:
    """`per_class_accuracy_figure`, saved at ``path``."""
    return _save(per_class_accuracy_figure(accuracies, class_names, title, overall=overall), path)


#: Font size (points) of the per-class values and of the legend.
VALUE_FONTSIZE = 8
#: Gap (points) between a bar's top and its value.
VALUE_PAD = 2


def per_class_accuracy_figure(
    accuracies: Any, class_names: Sequence[str], title: str, *, overall: float | None = None
) -> Figure:
    """Test accuracy per class in class order, with the overall accuracy as a line (S2); classes
    below it in red. ``overall`` defaults to the mean of the per-class accuracies (labelled so).

    The legend (what the line and the two colours mean) sits between the title and the
    axes, and no value is drawn across the dashed line: a value that would be is put
    inside its bar instead (see `_label_bars`).
    """
    acc = _array(accuracies)
    if acc.shape != (len(class_names),):
        raise ValueError(
            f"accuracies must have one value per class ({len(class_names)}), got shape {acc.shape}"
        )
    reference = float(acc.mean()) if overall is None else float(overall)
    reference_label = "mean per-class accuracy" if overall is None else "overall accuracy"
    colours = ["tab:red" if a < reference else "tab:green" for a in acc]
    fig = Figure(figsize=(max(6.4, 0.75 * len(acc) + 2), 4.6))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(acc)), acc, color=colours)
    ax.axhline(
        reference,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"{reference_label} {reference:.3f}",
    )
    ax.set_xticks(
        range(len(acc)), labels=class_names, rotation=30, ha="right", rotation_mode="anchor"
    )
    ax.set_ylim(0, 1.1)  # room above a bar of 1.0 for its value
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("test accuracy")
    ax.set_xlabel("class")
    # The legend above the axes, the title above the legend: neither meets the bars.
    ax.set_title(title, pad=4 * VALUE_FONTSIZE)
    # Legend entries only (zero-height bars): what the two colours mean.
    short = "overall" if overall is not None else "the mean"
    ax.bar(0, 0, color="tab:green", label=f"at or above {short}")
    ax.bar(0, 0, color="tab:red", label=f"below {short}")
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncols=3,
        fontsize=VALUE_FONTSIZE,
        frameon=False,
        borderaxespad=0.2,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _label_bars(ax, bars, acc, reference)  # after the layout: it measures in pixels
    return fig


def _label_bars(ax: Any, bars: Any, acc: np.ndarray, reference: float) -> None:
    """Write each bar's value above it, or inside it where the dashed line would cross it.

    A value above its bar spans [top + pad, top + pad + height] (in pixels); when the
    line falls in that band, the value goes inside the bar, below its top (white), which
    the line cannot cross since it lies above the top; a bar too short for that gets its
    value just above the line.
    """
    px = ax.figure.dpi / 72  # pixels per point
    height = 1.3 * VALUE_FONTSIZE * px  # a line of digits, with some margin
    pad = VALUE_PAD * px

    def y_px(value: float) -> float:
        return float(ax.transData.transform((0.0, value))[1])

    line, zero = y_px(reference), y_px(0.0)
    for rect, value in zip(bars, acc, strict=True):
        top = y_px(float(value))
        x = rect.get_x() + rect.get_width() / 2
        where, offset, style = float(value), VALUE_PAD, {"va": "bottom"}
        if top + pad - 1 <= line <= top + pad + height + 1:  # the line would cross it
            if top - zero >= height + 2 * pad:
                offset, style = -VALUE_PAD, {"va": "top", "color": "white"}
            else:
                where = reference
        ax.annotate(
            f"{value:.2f}",
            (x, where),
            xytext=(0, offset),
            textcoords="offset points",
            ha="center",
            fontsize=VALUE_FONTSIZE,
            **style,
        )


def _tile(weights: np.ndarray) -> np.ndarray:
    """Min-max scale one (C, H, W) tile to [0, 1] and move channels last."""
    low, high = weights.min(), weights.max()
    scaled = (weights - low) / (high - low) if high > low else np.full_like(weights, 0.5)
    return np.transpose(scaled, (1, 2, 0))


def plot_first_layer_weights(
    weight: Any,
    input_shape: Sequence[int],
    path: str | Path,
    title: str,
) -> Path:
    """First-layer weights as images, one tile per hidden unit (S4).

    ``weight`` is ``(hidden, C*H*W)``; each row is reshaped to ``input_shape`` = (C, H, W)
    and min-max scaled on its own (grayscale for C=1, RGB for C=3), so a tile shows the
    input pattern its unit responds to most, whatever the weight scale.
    """
    w = _array(weight)
    c, h, width = (int(v) for v in input_shape)
    if w.ndim != 2 or w.shape[1] != c * h * width:
        raise ValueError(
            f"weight must be (hidden, C*H*W) = (hidden, {c * h * width}) for input_shape "
            f"{tuple(input_shape)}, got shape {w.shape}"
        )
    if c not in (1, 3):
        raise ValueError(f"input_shape channels must be 1 (grayscale) or 3 (RGB), got {c}")
    hidden = w.shape[0]
    shown = min(hidden, MAX_WEIGHT_TILES)
    cols = math.ceil(math.sqrt(shown))
    rows = math.ceil(shown / cols)
    # One mosaic image with a 1-pixel white border between tiles: a single imshow is far
    # faster than one subplot per unit, and this figure is drawn at the end of every run.
    pad = 1
    mosaic = np.ones((rows * (h + pad) + pad, cols * (width + pad) + pad, c))
    for k in range(shown):
        r, col = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + col * (width + pad)
        mosaic[top : top + h, left : left + width] = _tile(w[k].reshape(c, h, width))
    side = min(8.0, max(5.0, cols * 0.8))
    title_inches = 0.8
    height = side * rows / cols + title_inches
    fig = Figure(figsize=(side, height))
    # Fixed placement instead of tight_layout: no axes decorations to measure, one draw.
    ax = fig.add_axes((0.02, 0.01, 0.96, 1 - 0.01 - title_inches / height))
    if c == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    caption = (
        f"{shown} hidden units" if shown == hidden else f"first {shown} of {hidden} hidden units"
    )
    ax.set_title(f"{title}\n{caption}, each tile min-max scaled, {c}x{h}x{width}")
    return _save(fig, path)
