"""`bench kernels` runs and prints a measured row per model.

Run with `--quick` (20 batches per epoch, one measured epoch). No speed is asserted (the
machine is noisy): the printed core count and MFLOP per batch are checked against the
thread policy's own figures (experiments/training/threads.py).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from experiments.training import threads
from models.components import MLP, FourBlockCNN, LeNet
from tests.helpers import REPO, run_cli


@pytest.mark.slow
def test_kernels_benchmark_prints_both_thread_counts_per_model(tmp_path):
    # --quick: 20 batches per epoch, one measured epoch; the rows and figures checked here
    # are the full run's (the seconds are not compared).
    proc = run_cli(
        "bench",
        "kernels",
        "--busy",
        "--no-compile",
        "--quick",
        cwd=REPO,
        home=tmp_path,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cores = threads.available_cores()
    assert f"{cores} core(s); busy process beside: yes" in proc.stdout
    assert f"{cores} threads s" in proc.stdout  # the header names the second column's count
    assert "quick: 20 batches per epoch, 1 measured epoch" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^(MLP|LeNet|S1\.3)", line)]
    fashion, cifar = torch.randn(64, 1, 28, 28), torch.randn(4, 3, 32, 32)
    expected = {  # the row's model -> its MFLOP per forward batch, as the policy counts it
        "MLP 784-128-10, batch 64": threads.forward_mflop(MLP(784, 10, [128]), fashion),
        "LeNet, batch 4": threads.forward_mflop(LeNet(num_classes=5), cifar),
        "MLP 784-512-10, batch 64": threads.forward_mflop(MLP(784, 10, [512]), fashion),
        "S1.3 CNN, batch 64, 20 batches": threads.forward_mflop(FourBlockCNN(), fashion),
    }
    assert [row[:34].strip() for row in rows] == list(expected), proc.stdout
    for row, mflop in zip(rows, expected.values(), strict=True):
        printed, one, many = (float(v) for v in row.split()[-3:])
        assert printed == pytest.approx(mflop, abs=0.06), row  # printed with one decimal
        assert math.isfinite(one) and one > 0 and math.isfinite(many) and many > 0, row
    # The rows span small and large work per batch (LeNet at batch 4 vs the S1.3 CNN).
    assert min(expected.values()) * 100 < max(expected.values())
