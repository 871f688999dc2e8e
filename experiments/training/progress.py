"""The training progress bar: Lightning's TQDM bar, redrawn at most a few times a second.

Redrawing a terminal bar costs ~2 ms (formatting, the running loss, the write); with small
models (S1.2: under a millisecond of compute per batch) redrawing every few steps would be
a visible share of the epoch, and a bar that changes 50 times a second is unreadable
anyway. This bar looks at the clock every `refresh_rate` batches and redraws when
`min_interval` seconds have passed (and at the end of each epoch), showing the running
mean training loss read from the module's accumulator, so the LightningModule logs
nothing per step.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar

DEFAULT_REFRESH_RATE = 10
DEFAULT_MIN_INTERVAL = 0.25  # seconds between redraws


class TrainingProgressBar(TQDMProgressBar):
    def __init__(
        self,
        refresh_rate: int = DEFAULT_REFRESH_RATE,
        min_interval: float = DEFAULT_MIN_INTERVAL,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.min_interval = min_interval
        self._last_redraw = float("-inf")

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        if current == total:
            return True
        if current % self.refresh_rate:
            return False
        now = time.monotonic()
        if now - self._last_redraw < self.min_interval:
            return False
        self._last_redraw = now
        return True

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the MLflow run id is printed at the end instead
        running = getattr(pl_module, "running_train_loss", None)
        value = running() if callable(running) else None
        if value is not None:
            metrics["loss"] = f"{value:.4f}"
        return metrics
