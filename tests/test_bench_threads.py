"""`bench threads --quick --json` measures every variant in every condition and its figures
agree with each other. No speed is asserted (CI machines are shared and noisy): each ratio
is checked against the seconds it is made of, each count against the candidates. One model
(LeNet at batch 4, the cheapest: about a minute) keeps the CI cost down; the others run
the same code."""

from __future__ import annotations

import json
import statistics

import pytest

from experiments.bench import threads as bench
from experiments.training import threads
from tests.helpers import run_main


@pytest.mark.slow
def test_quick_threads_benchmark_figures_agree_with_each_other(capsys):
    code, out, err = run_main(
        "bench", "threads", "--quick", "--json", "--models", "lenet_b4", capsys=capsys
    )
    assert code == 0, err[-3000:]
    report = json.loads(out)
    assert (report["epochs"], report["rounds"], report["quick"]) == (2, 1, True)
    assert report["cores"] == threads.available_cores()
    assert len(report["load_before"]) == len(report["load_after"]) == 3
    assert list(report["models"]) == ["lenet_b4"]
    row = report["models"]["lenet_b4"]
    fixed = [str(n) for n in threads.candidates(threads.available_cores())]
    variants = [*fixed, "default", "adaptive"]
    assert row["fixed_counts"] == [int(n) for n in fixed]
    assert (row["experiment"], row["batches_per_epoch"]) == ("s0-cnn", bench.MODELS["lenet_b4"][2])
    for condition in bench.CONDITIONS:
        seconds, runs = row["seconds"][condition], row["runs"][condition]
        assert set(seconds) == set(runs) == set(variants)
        for variant in variants:
            assert len(runs[variant]) == 1 and seconds[variant] == statistics.median(runs[variant])
            assert seconds[variant] > 0
        # The better fixed count: the fastest of those not stopped early (3x the fastest).
        cut = row["cut"][condition]
        assert set(cut) <= set(fixed) and len(cut) < len(fixed)
        best = str(row["best_fixed"][condition])
        assert best == min((n for n in fixed if n not in cut), key=lambda n, s=seconds: s[n])
        for variant in ("default", "adaptive"):
            ratio = row[f"{variant}_vs_best_{condition}"]
            assert ratio == pytest.approx(seconds[variant] / seconds[best], rel=1e-12)
        # The default keeps one count for both epochs; adaptive records one per epoch.
        (chosen,) = row["threads_chosen"][condition]["default"]
        assert len(chosen) == 2 and chosen[0] == chosen[1] and str(chosen[0]) in fixed
        (schedule,) = row["threads_chosen"][condition]["adaptive"]
        assert len(schedule) == 2 and all(str(n) in fixed for n in schedule)
    headline = report["lenet_b4"]
    assert headline == {
        f"default_vs_best_{c}": row[f"default_vs_best_{c}"] for c in bench.CONDITIONS
    }
    assert report["targets_met"] == all(
        row[f"default_vs_best_{c}"] <= limit for c, limit in bench.TARGETS.items()
    )
