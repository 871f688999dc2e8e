"""The training progress bar redraws on a clock, not on every few batches."""

from __future__ import annotations

from experiments.training.progress import TrainingProgressBar


def test_redraws_at_most_once_per_interval_and_always_at_the_end():
    bar = TrainingProgressBar(refresh_rate=1, min_interval=3600.0)
    assert bar._should_update(1, 100)  # the first redraw happens at once
    assert not any(bar._should_update(n, 100) for n in range(2, 100))  # within the interval
    assert bar._should_update(100, 100)  # the last batch of an epoch always redraws


def test_looks_at_the_clock_only_every_refresh_rate_batches():
    bar = TrainingProgressBar(refresh_rate=10, min_interval=0.0)
    redraws = [n for n in range(1, 36) if bar._should_update(n, 35)]
    assert redraws == [10, 20, 30, 35]


def test_disabled_bar_never_redraws():
    bar = TrainingProgressBar(refresh_rate=1, min_interval=0.0)
    bar.disable()
    assert not bar._should_update(5, 5)
