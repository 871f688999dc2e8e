"""Judge a run's final state from its learning curves: underfitting, overfitting or generalizing.

S1.2 and S1.3 ask for this judgement "derived from the curves". The `judgement` output applies it to
every run with validation (tags ``fit_judgement`` and ``fit_judgement_reason``, printed with
the test metrics). The rule (first match wins; thresholds below) is written out in docs/tracking.md.

Why these numbers: a 5-point accuracy gap is well beyond the epoch-to-epoch noise of a
10,000-image validation set (standard error about 0.3 points at 90 % accuracy), and a
10 % rise of validation loss above its minimum is beyond the wobble of a converged run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "OVERFIT_ACC_GAP",
    "STILL_LEARNING_DROP",
    "UNDERFIT_TRAIN_ACC",
    "VAL_LOSS_RISE",
    "Judgement",
    "judge_fit",
]

#: overfitting when final train accuracy - validation accuracy is larger than this
OVERFIT_ACC_GAP = 0.05
#: overfitting when validation loss ends this fraction above its (earlier) minimum
VAL_LOSS_RISE = 0.10
#: underfitting when the final training accuracy is below this
UNDERFIT_TRAIN_ACC = 0.70
#: underfitting when training loss fell by more than this fraction over the last interval
STILL_LEARNING_DROP = 0.10

Label = Literal["underfitting", "overfitting", "generalizing", "insufficient data"]


@dataclass(frozen=True)
class Judgement:
    label: Label
    reason: str

    def __str__(self) -> str:
        return f"{self.label} ({self.reason})"


def judge_fit(
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    train_acc: Sequence[float],
    val_acc: Sequence[float],
) -> Judgement:
    """Apply the rule in the module docstring to aligned curves (index i = the same point)."""
    curves = {
        "train_loss": [float(v) for v in train_loss],
        "val_loss": [float(v) for v in val_loss],
        "train_acc": [float(v) for v in train_acc],
        "val_acc": [float(v) for v in val_acc],
    }
    lengths = {name: len(values) for name, values in curves.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"the four curves must have the same number of points, got {lengths}")
    n = lengths["train_loss"]
    if n < 2:
        return Judgement("insufficient data", f"{n} validation point(s); a trend needs 2")
    tl, vl, ta, va = curves.values()
    gap = ta[-1] - va[-1]
    finals = f"train acc {ta[-1]:.3f}, val acc {va[-1]:.3f}"

    best = min(range(n), key=vl.__getitem__)
    rise = (vl[-1] - vl[best]) / vl[best] if vl[best] > 0 else 0.0
    if best < n - 1 and rise > VAL_LOSS_RISE and tl[-1] < tl[best]:
        return Judgement(
            "overfitting",
            f"val loss rose {rise:.0%} from its minimum {vl[best]:.4f} at point {best + 1} "
            f"to {vl[-1]:.4f} (> {VAL_LOSS_RISE:.0%}) while train loss fell "
            f"{tl[best]:.4f} -> {tl[-1]:.4f}; {finals}",
        )

    if ta[-1] < UNDERFIT_TRAIN_ACC:
        return Judgement(
            "underfitting",
            f"final train acc {ta[-1]:.3f} < {UNDERFIT_TRAIN_ACC:.2f}; val acc {va[-1]:.3f}",
        )
    drop = (tl[-2] - tl[-1]) / tl[-2] if tl[-2] > 0 else 0.0
    if drop > STILL_LEARNING_DROP:
        return Judgement(
            "underfitting",
            f"train loss still fell {drop:.0%} over the last interval "
            f"({tl[-2]:.4f} -> {tl[-1]:.4f}, > {STILL_LEARNING_DROP:.0%}): not converged; "
            f"{finals}",
        )

    if gap > OVERFIT_ACC_GAP:
        return Judgement(
            "overfitting",
            f"train-val accuracy gap {gap:.3f} > {OVERFIT_ACC_GAP:.2f} ({finals})",
        )
    return Judgement(
        "generalizing",
        f"train-val accuracy gap {gap:.3f} <= {OVERFIT_ACC_GAP:.2f}, last train-loss drop "
        f"{drop:.0%} <= {STILL_LEARNING_DROP:.0%}, val loss {rise:.0%} above its minimum; "
        f"{finals}",
    )
