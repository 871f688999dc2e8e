"""The speed benchmark runs end to end in --quick mode and measures every figure.

Speed targets are not asserted (CI machines are shared and noisy): this only proves the
command works and that each headline figure was actually measured.
"""

from __future__ import annotations

import json
import math

import pytest

from experiments.bench.speed import JSON_KEYS
from tests.conftest import REPO, run_cli


@pytest.mark.slow
def test_quick_speed_benchmark_measures_every_figure(tmp_path):
    proc = run_cli("bench", "speed", "--quick", "--json", cwd=REPO, home=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)  # stdout holds exactly one JSON object
    assert set(JSON_KEYS) <= set(figures)
    for key in JSON_KEYS:
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    details = figures["details"]
    for case in ("s12", "s13", "s03"):
        assert details[case]["bare_s_per_epoch"] > 0
        assert details[case]["project_s_per_epoch"] > 0
        assert details[case]["lightning_floor_s_per_epoch"] > 0
        assert details[case]["threads"] >= 1
    assert details["s12"]["conventional_s_per_epoch"] > 0
    assert details["tracking"]["calls"] > 0
    assert details["tracking"]["figures_and_summary_s"] > 0
    assert details["import_floor_s"] > 0  # not compared with first_step_s: both are noisy
