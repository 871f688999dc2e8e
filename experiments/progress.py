"""The training progress bar: Lightning's TQDM bar, refreshed every few steps.

Refreshing a terminal bar and logging a per-step value cost time on every batch; with
small models (S1.2: under a millisecond of compute per batch) that overhead is a large
share of the epoch. This bar redraws every `refresh_rate` batches and shows the running
mean training loss read from the module's accumulator, so the LightningModule logs
nothing per step.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

DEFAULT_REFRESH_RATE = 20


class TrainingProgressBar(TQDMProgressBar):
    def __init__(self, refresh_rate: int = DEFAULT_REFRESH_RATE) -> None:
        super().__init__(refresh_rate=refresh_rate)

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the MLflow run id is printed at the end instead
        running = getattr(pl_module, "running_train_loss", None)
        value = running() if callable(running) else None
        if value is not None:
            metrics["loss"] = f"{value:.4f}"
        return metrics
