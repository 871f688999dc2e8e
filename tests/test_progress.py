"""The training progress bar redraws on a clock, not on every few batches."""

from __future__ import annotations

from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from experiments.training.progress import TRAIN_BAR_FORMAT, TrainingProgressBar


def test_redraws_at_most_once_per_interval_and_always_at_the_end():
    bar = TrainingProgressBar(refresh_rate=1, min_interval=3600.0)
    assert bar._redraw_due(1, 100)  # the first redraw happens at once
    assert not any(bar._redraw_due(n, 100) for n in range(2, 100))  # within the interval
    assert bar._redraw_due(100, 100)  # the last batch of an epoch always redraws


def test_looks_at_the_clock_only_every_refresh_rate_batches():
    bar = TrainingProgressBar(refresh_rate=10, min_interval=0.0)
    redraws = [n for n in range(1, 36) if bar._redraw_due(n, 35)]
    assert redraws == [10, 20, 30, 35]


def test_the_training_bar_keeps_room_for_the_bar_at_80_columns():
    # tqdm draws at most columns - 1; a real run at 80 columns is in test_first_hour.py.
    line = Tqdm.format_meter(
        30000,
        60000,
        12.3,
        ncols=79,
        prefix="Epoch 99",
        bar_format=TRAIN_BAR_FORMAT,
        postfix="loss=0.4512, val/acc=0.851",
    )
    assert len(line) == 79 and line.endswith("loss=0.4512, val/acc=0.851]"), line
    assert len(line.split("|")[1]) >= 8, line
