"""`bench kernels` runs and prints a measured row per model (no speed is asserted)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO, run_cli


@pytest.mark.slow
def test_kernels_benchmark_prints_both_thread_counts_per_model(tmp_path):
    proc = run_cli(
        "bench", "kernels", "--busy", "--no-compile", cwd=REPO, home=tmp_path, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "busy process beside: yes" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if re.match(r"^(MLP|LeNet|S1\.3)", line)]
    assert len(rows) == 4, proc.stdout
    for row in rows:
        mflop, one, many = (float(v) for v in row.split()[-3:])
        assert mflop > 0 and one > 0 and many > 0, row
