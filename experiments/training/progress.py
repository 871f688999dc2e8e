"""The training progress bar: Lightning's TQDM bar, redrawn at most a few times a second.

Redrawing a terminal bar costs ~2 ms (formatting, the running loss, the write); with small
models (S1.2: under a millisecond of compute per batch) redrawing every few steps would be
a visible share of the epoch, and a bar that changes 50 times a second is unreadable
anyway. This bar looks at the clock every `refresh_rate` batches and redraws when
`min_interval` seconds have passed (and at the end of each epoch), showing the running
mean training loss read from the module's accumulator, so the LightningModule logs
nothing per step.

The training bar's suffix holds the training loss and val/acc only: the module logs every
validation metric to the bar (val/f1, val/precision, ...), which would push the loss off
an 80- or 120-column line and squeeze the bar to a character or two; they are all in
MLflow. The training bar also leaves out tqdm's rate (it/s), which elapsed<remaining
already conveys, so at 80 columns the bar keeps about 15 characters.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

DEFAULT_REFRESH_RATE = 10
DEFAULT_MIN_INTERVAL = 0.25  # seconds between redraws
#: The logged metrics shown after the training loss (everything else is in MLflow).
SHOWN_METRICS = ("val/acc",)
#: Lightning's bar format without the rate: "Epoch 0: 42%|####   | 400/938 [00:05<00:07, loss=...]"
TRAIN_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class TrainingProgressBar(TQDMProgressBar):
    def __init__(
        self,
        refresh_rate: int = DEFAULT_REFRESH_RATE,
        min_interval: float = DEFAULT_MIN_INTERVAL,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.min_interval = min_interval
        self._last_redraw = float("-inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning's own version redraws every `refresh_rate` batches; this one also waits
        # for the clock. Public parts only: the tqdm bar and the metrics of `get_metrics`.
        bar, n = self.train_progress_bar, batch_idx + 1
        if bar is None or bar.disable or not self._redraw_due(n, bar.total):
            return
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws the bar once

    def _redraw_due(self, current: int, total: int | float | None) -> bool:
        if current == total:
            return True
        if current % self.refresh_rate:
            return False
        now = time.monotonic()
        if now - self._last_redraw < self.min_interval:
            return False
        self._last_redraw = now
        return True

    def init_validation_tqdm(self):
        # Validation and test take a second or two: their results show on the training
        # bar and in the summary; their own bars would add a line each time.
        return Tqdm(disable=True)

    init_test_tqdm = init_validation_tqdm

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.bar_format = TRAIN_BAR_FORMAT
        return bar

    def get_metrics(self, trainer, pl_module):
        logged = super().get_metrics(trainer, pl_module)
        # The loss first, then the shown metrics; v_num (the MLflow run id, printed at the
        # end instead) and the other validation metrics are left out.
        running = getattr(pl_module, "running_train_loss", None)
        value = running() if callable(running) else None
        if value is None:
            # The running mean restarts when the module logs it (at each validation), so
            # right after one the bar shows the mean just logged rather than no loss.
            value = trainer.callback_metrics.get("train/loss")
        metrics = {} if value is None else {"loss": f"{float(value):.4f}"}
        metrics.update((key, logged[key]) for key in SHOWN_METRICS if key in logged)
        return metrics
