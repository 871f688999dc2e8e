"""The thread choice: measured by a probe that changes nothing, recorded in the run's config
so a logged config repeats the run exactly; --threads N skips it; adaptive re-measures."""

from __future__ import annotations

import random
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from experiments.training import threads
from experiments.training.config import ConfigError, parse
from experiments.training.runner import run_experiment
from models.components import MLP
from tests.helpers import data_overrides, run_main, tiny


def _default(overrides: list[str]) -> list[str]:
    """`overrides` without the suite's pinned `--threads 1` (tests/helpers/data.py)."""
    at = overrides.index("--threads")
    return overrides[:at] + overrides[at + 2 :]


def test_the_candidates_are_powers_of_two_and_the_cores():
    assert threads.candidates(1) == [1]
    assert threads.candidates(2) == [1, 2]
    assert threads.candidates(6) == [1, 2, 4, 6]
    assert threads.candidates(8) == [1, 2, 4, 8]


def test_a_higher_count_must_be_clearly_faster():
    assert threads.pick({1: 1.0, 2: 0.5}) == 2
    assert threads.pick({1: 1.0, 2: 0.97}) == 1  # within MORE_THREADS_GAIN: fewer threads
    assert threads.pick({1: 1.0, 2: 3.0}) == 1  # a busy neighbour: two threads 3x slower
    assert threads.pick({1: 1.0, 2: 0.6, 4: 0.59}) == 2


def test_measure_times_the_step_at_each_count():
    # A step whose cost depends on the thread count it runs at (2 ms at one, 1 ms at two).
    def step():
        time.sleep(0.002 / torch.get_num_threads())

    before = torch.get_num_threads()
    timings = threads.measure(step, [1, 2], budget_s=0.2)
    assert torch.get_num_threads() == before
    assert set(timings) == {1, 2}
    assert timings[1] > timings[2] * threads.MORE_THREADS_GAIN
    assert threads.pick(timings) == 2


def test_a_short_run_pays_one_timed_step_per_count():
    # PROBE_SHARE of a 10-step run is far below one round: one untimed step per count, then
    # one timed step per count; without a planned length the probe runs several rounds.
    calls = []
    timings = threads.measure(lambda: calls.append(time.sleep(0.001)), [1, 2], planned_steps=10)
    assert len(calls) == 2 + 2 and set(timings) == {1, 2}
    calls.clear()
    threads.measure(lambda: calls.append(time.sleep(0.001)), [1, 2])
    assert 2 + 2 < len(calls) <= 2 + 2 * threads.PROBE_STEPS


def test_a_counts_first_step_does_not_decide():
    # Each count's first step is slow (it allocates, or starts the count's threads: 14.5 ms
    # against 2 ms for the MLP on two threads); two threads (1 ms against 2 ms) still win.
    first = set()

    def step():
        n = torch.get_num_threads()
        if n not in first:
            first.add(n)
            time.sleep(0.02)
        else:
            time.sleep(0.002 / n)

    timings = threads.measure(step, [1, 2], budget_s=0.2)
    assert threads.pick(timings) == 2, timings


def test_the_planned_steps_follow_lightnings_limits():
    data = SimpleNamespace(train_x=torch.zeros(1000, 1), batch_size=64)  # 16 batches
    assert threads.planned_steps({"max_epochs": 3}, data) == 48
    assert threads.planned_steps({"max_epochs": 3, "limit_train_batches": 0.5}, data) == 24
    assert threads.planned_steps({"max_epochs": 3, "limit_train_batches": 1.0}, data) == 48
    assert threads.planned_steps({"max_epochs": 3, "limit_train_batches": 5}, data) == 15
    assert threads.planned_steps({"max_epochs": 3, "max_steps": 20}, data) == 20
    assert threads.planned_steps({"max_epochs": -1, "max_steps": 20}, data) == 20
    assert threads.planned_steps({"max_epochs": None}, data) is None


def test_the_probe_changes_neither_the_model_nor_any_random_generator():
    from models.classifier import ImageClassifier

    # Dropout draws from torch's generator on every training step of the probe.
    model = ImageClassifier(MLP(784, 10, [32], dropout=0.5), optimizer="sgd", momentum=0.9)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    choice = threads.probe(model, x, y, limit=2)
    assert choice.threads in (1, 2)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    assert choice.reason.startswith("probe: ms per training step at 1: ")


def test_an_explicit_count_skips_the_probe_and_ddp_shares_the_cores():
    explicit = threads.for_run(parse("s1-mlp", ["--threads", "3"]), None, None, cap=1)
    assert (explicit.threads, explicit.timings) == (3, None)
    ddp = parse("s1-mlp", ["--trainer.strategy", "ddp", "--trainer.devices", "2"])
    choice = threads.for_run(ddp, None, None, cap=threads.available_cores())
    assert choice.threads == max(1, threads.available_cores() // 2)
    assert choice.reason.startswith("DDP: 2 processes on this node share")


def test_a_study_worker_probes_once(fashion_dir):
    cfg = parse("s1-mlp", _default(tiny(fashion_dir)))
    model, _ = cfg.instantiate()
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    data = SimpleNamespace(train_x=x, train_y=y, batch_size=64)
    before = torch.get_num_threads()
    with threads.study_worker(1):
        assert torch.get_num_threads() == 1
        first = threads.for_run(cfg, model, data, cap=2)
        second = threads.for_run(cfg, model, data, cap=2)
    # The worker's share and its remembered count end with it: a study run in-process
    # (one worker) left them to the next run of the same process, whose reason was then
    # "this worker's probe" (test_a_logged_config_repeats_the_run_exactly failed).
    assert torch.get_num_threads() == before and threads._PROCESS == {"once": False, "choice": None}
    assert second.threads == first.threads and second.timings == first.timings
    assert second.reason == f"this worker's probe at its first trial: {first.reason}"
    third = threads.for_run(cfg, model, data, cap=1)  # every run probes again
    assert third.reason.startswith("1 core available")


def test_a_logged_config_repeats_the_run_exactly(store, fashion_dir, capsys):
    # The default run measures its thread count; the count goes into its config, and
    # `run --config` of that config (no probe) gives the same test metrics, bit for bit.
    before = torch.get_num_threads()
    first = run_experiment(parse("s1-mlp", _default(tiny(fashion_dir))), store, verbose=False)
    client = MlflowClient(store)
    run = client.get_run(first.run_id)
    count = int(run.data.tags["torch_threads"])
    assert run.data.params["threads"] == str(count)
    assert run.data.tags["torch_threads_reason"].startswith(("probe: ", "1 core available"))
    logged = Path(client.download_artifacts(first.run_id, "config.yaml"))
    assert yaml.safe_load(logged.read_text())["threads"] == count
    # --tracking-uri: the default relative sqlite URI is MLflow's cached store, whose pooled
    # connection may still be to an earlier test's database in another working directory.
    rerun = ["--config", str(logged), "--tracking-uri", store, "--no-system-metrics"]
    code, _, err = run_main("run", *rerun, capsys=capsys)
    assert code == 0, err
    again = client.search_runs(
        [run.info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert again.info.run_id != first.run_id
    assert again.data.tags["torch_threads"] == str(count)
    assert again.data.tags["torch_threads_reason"] == "--threads (or threads: in the config)"
    metrics = {k: v for k, v in again.data.metrics.items() if k.startswith("test/")}
    assert metrics == {k: v for k, v in first.test_metrics.items() if k.startswith("test/")}
    assert torch.get_num_threads() == before  # restored after each run


def test_adaptive_logs_its_schedule(store, fashion_dir):
    before = torch.get_num_threads()
    cfg = parse("s1-mlp", [*tiny(fashion_dir, epochs=2), "--threads", "adaptive"])
    result = run_experiment(cfg, store, verbose=False)
    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    history = client.get_metric_history(result.run_id, "threads")
    counts = [int(m.value) for m in sorted(history, key=lambda m: m.step)]
    assert len(counts) == 2 and all(1 <= n <= threads.available_cores() for n in counts)
    assert run.data.tags["torch_threads_schedule"] == f"epoch 0: {counts[0]}, epoch 1: {counts[1]}"
    assert run.data.params["threads"] == "adaptive"
    assert torch.get_num_threads() == before


def test_bad_thread_count_names_the_key_and_the_value():
    with pytest.raises(ConfigError) as info:
        parse("s1-mlp", ["--threads", "0"])
    assert "--threads 0: must be above 0" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse("s1-mlp", ["--threads", "adaptiv"])
    assert "--threads adaptiv" in str(info.value)


def test_the_bare_network_probe_of_bench_speed():
    choice = threads.choose(None, MLP(784, 10, [128]), torch.randn(64, 1, 28, 28), cap=2)
    assert choice.threads in threads.candidates(min(2, threads.available_cores()))
    assert threads.choose(3, None, None).threads == 3


def test_data_overrides_pin_one_thread(fashion_dir):
    # The suite's runs skip the probe (their speed is not the point); the tests above drop it.
    assert parse("s1-mlp", data_overrides("s1-mlp", fashion_dir, None)).threads == 1
