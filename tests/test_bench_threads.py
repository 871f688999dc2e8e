"""`bench threads --quick --json` measures what the targets compare and its figures agree
with each other. No speed is asserted (CI machines are shared and noisy): each ratio is
checked against the seconds it is made of, each count against the candidates. One round of
one model (LeNet at batch 4, the cheapest: about half a minute) keeps the CI cost down; the
others run the same code. The full run's extra variant and condition (`--threads adaptive`,
a neighbour arriving after the first epoch) are checked on one short run each, and how
rounds and stopped runs combine on given seconds (`figures`)."""

from __future__ import annotations

import json

import pytest

from experiments.bench import threads as bench
from experiments.training import threads
from tests.helpers import run_main


@pytest.mark.slow
def test_quick_threads_benchmark_figures_agree_with_each_other(capsys):
    code, out, err = run_main(
        *("bench", "threads", "--quick", "--rounds", "1", "--json", "--models", "lenet_b4"),
        capsys=capsys,
    )
    assert code == 0, err[-3000:]
    report = json.loads(out)
    assert (report["epochs"], report["rounds"], report["quick"]) == (2, 1, True)
    assert report["conditions"] == list(bench.QUICK_CONDITIONS) == ["quiet", "busy"]
    assert report["cores"] == threads.available_cores()
    assert len(report["load_before"]) == len(report["load_after"]) == 3
    assert list(report["models"]) == ["lenet_b4"]
    row = report["models"]["lenet_b4"]
    fixed = [str(n) for n in threads.candidates(threads.available_cores())]
    variants = [*fixed, "default"]  # --quick: no adaptive
    assert row["fixed_counts"] == [int(n) for n in fixed]
    assert (row["experiment"], row["batches_per_epoch"]) == ("s0-cnn", bench.MODELS["lenet_b4"][2])
    assert set(row["seconds"]) == set(bench.QUICK_CONDITIONS)
    for condition in bench.QUICK_CONDITIONS:
        seconds, runs = row["seconds"][condition], row["runs"][condition]
        assert set(seconds) == set(runs) == set(variants)
        for variant in variants:  # one round: the fastest run and the median are that run
            assert len(runs[variant]) == 1 and seconds[variant] == runs[variant][0] > 0
            assert row["median_seconds"][condition][variant] == seconds[variant]
        # The better fixed count: the fastest of those not stopped early (3x the fastest).
        cut = row["cut"][condition]
        assert set(cut) <= set(fixed) and len(cut) < len(fixed)
        best = str(row["best_fixed"][condition])
        assert best == min((n for n in fixed if n not in cut), key=lambda n, s=seconds: s[n])
        ratio = row[f"default_vs_best_{condition}"]
        assert ratio == pytest.approx(seconds["default"] / seconds[best], rel=1e-12)
        assert f"adaptive_vs_best_{condition}" not in row
        # The default keeps one count for both epochs.
        (chosen,) = row["threads_chosen"][condition]["default"]
        assert len(chosen) == 2 and chosen[0] == chosen[1] and str(chosen[0]) in fixed
    headline = report["lenet_b4"]
    assert headline == {
        f"default_vs_best_{c}": row[f"default_vs_best_{c}"] for c in bench.QUICK_CONDITIONS
    }
    assert report["targets_met"] == all(
        row[f"default_vs_best_{c}"] <= limit for c, limit in bench.TARGETS.items()
    )


def test_a_late_neighbour_spins_from_the_second_epoch_and_adaptive_records_both():
    # The full run's "late" condition and adaptive variant, on 5 batches per epoch.
    neighbour = bench.Neighbour()
    try:
        result = bench.run_variant("s0-cnn", "adaptive", 5, neighbour, None)
        assert neighbour.process is not None and neighbour.process.poll() is None  # spinning
    finally:
        neighbour.stop()
    assert neighbour.process is None
    cores = threads.candidates(threads.available_cores())
    assert len(result["threads"]) == 2 and set(result["threads"]) <= set(cores)
    assert result["seconds"] > 0 and not result["cut"]
    # A fixed count past its limit stops at the end of its first batch: a lower bound.
    stopped = bench.run_variant("s0-cnn", "1", 50, None, 0.0)
    assert stopped["cut"] and stopped["threads"] == [1, 1]


def test_each_variant_counts_its_fastest_run_and_a_stopped_count_only_as_a_bound():
    # Three rounds of what --quick runs (the fixed counts and the default, quiet and busy).
    # Busy: two threads stopped in round 1 (3x the fastest so far) and not run again; quiet:
    # one thread finished round 1, then was stopped: its finished run still counts.
    runs = {
        "quiet": {"1": [2.2, 9.0], "2": [2.3, 2.6, 2.1], "default": [2.4, 2.2, 2.9]},
        "busy": {"1": [3.0, 3.3, 2.9], "2": [9.5], "default": [3.1, 3.6, 3.0]},
    }
    counts = {c: {"default": [[1, 1]] * 3} for c in runs}
    cuts = {"quiet": ["1"], "busy": ["2"]}
    row = bench.figures("mlp512", "MLP", 500, ["1", "2"], runs, counts, cuts)
    assert row["seconds"] == {
        "quiet": {"1": 2.2, "2": 2.1, "default": 2.2},
        "busy": {"1": 2.9, "2": 9.5, "default": 3.0},  # 9.5: the stopped run's lower bound
    }
    assert row["median_seconds"]["quiet"] == {"1": 5.6, "2": 2.3, "default": 2.4}
    assert row["best_fixed"] == {"quiet": 2, "busy": 1}
    assert row["default_vs_best_quiet"] == pytest.approx(2.2 / 2.1)
    assert row["default_vs_best_busy"] == pytest.approx(3.0 / 2.9)
    assert row["median_ratios"]["default_vs_best_quiet"] == pytest.approx(2.4 / 2.3)
    assert "adaptive_vs_best_quiet" not in row and "default_vs_best_late" not in row


def test_rounds_below_one_are_refused_in_words(capsys):
    code, _, err = run_main("bench", "threads", "--rounds", "0", capsys=capsys)
    assert code == 2 and "--rounds must be at least 1, got 0" in err


def test_a_count_far_slower_than_another_in_its_round_is_not_run_again():
    assert bench.far_slower({"1": 17.0, "2": 34.0}) == {"2"}  # the CNN, beside the busy process
    assert bench.far_slower({"1": 3.9, "2": 2.9}) == set()  # within 1.5x: both run again
    assert bench.far_slower({"1": 3.0}) == set() and bench.far_slower({}) == set()
