"""The thread policy: explicit --threads wins; otherwise threads follow the work per batch."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from experiments.training import threads
from experiments.training.config import ConfigError, parse
from experiments.training.runner import run_experiment
from models.components import MLP, FourBlockCNN, LeNet
from tests.helpers import data_overrides


def test_forward_flops_are_counted_from_the_network():
    # 784-128-10 at batch 64: 2 * 64 * (784*128 + 128*10) multiply-adds = 13.01 MFLOP.
    mflop = threads.forward_mflop(MLP(784, 10, [128]), torch.randn(64, 1, 28, 28))
    assert mflop == pytest.approx(2 * 64 * (784 * 128 + 128 * 10) / 1e6)


def _policy_threads(network, batch, cap: int) -> int:
    """The policy's rule (experiments/training/threads.py): one thread per
    MIN_MFLOP_PER_THREAD forward MFLOP, at least one, at most the cores (and the cap)."""
    per_thread = int(threads.forward_mflop(network, batch) // threads.MIN_MFLOP_PER_THREAD)
    return max(1, min(threads.available_cores(), cap, per_thread))


def test_small_batches_get_one_thread_and_big_ones_one_per_share_of_work():
    mlp = threads.choose(None, MLP(784, 10, [128]), torch.randn(64, 1, 28, 28), cap=8)
    lenet = threads.choose(None, LeNet(), torch.randn(4, 3, 32, 32), cap=8)
    assert (mlp.threads, lenet.threads) == (1, 1)
    batch = torch.randn(64, 1, 28, 28)
    cnn = threads.choose(None, FourBlockCNN(), batch, cap=64)
    # Hundreds of MFLOP per batch: work for dozens of threads, bounded by the cores.
    mflop = threads.forward_mflop(FourBlockCNN(), batch)
    assert mflop // threads.MIN_MFLOP_PER_THREAD >= 2
    assert cnn.threads == _policy_threads(FourBlockCNN(), batch, cap=64)
    assert cnn.threads >= min(2, threads.available_cores())
    assert f"{mflop:.1f} MFLOP per forward batch" in cnn.reason


def test_cap_bounds_the_automatic_choice_and_an_explicit_count_wins():
    capped = threads.choose(None, FourBlockCNN(), torch.randn(64, 1, 28, 28), cap=1)
    assert capped.threads == 1
    explicit = threads.choose(3, MLP(784, 10, [128]), torch.randn(64, 1, 28, 28), cap=1)
    assert (explicit.threads, explicit.reason) == (3, "--threads")


def test_using_restores_the_previous_thread_count():
    before = torch.get_num_threads()
    with threads.using(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_threads_flag_is_logged_and_restored_after_the_run(store, fashion_dir, cifar_dir):
    before = torch.get_num_threads()
    cfg = parse(
        "s1-mlp",
        [
            *data_overrides("s1-mlp", fashion_dir, cifar_dir),
            *("--threads", "1", "--trainer.max_epochs", "1"),
        ],
    )
    result = run_experiment(cfg, store)
    run = MlflowClient(store).get_run(result.run_id)
    assert run.data.tags["torch_threads"] == "1"
    assert run.data.tags["torch_threads_reason"] == "--threads"
    assert run.data.params["threads"] == "1"
    assert torch.get_num_threads() == before


def test_bad_thread_count_names_the_key_and_the_value():
    with pytest.raises(ConfigError) as info:
        parse("s1-mlp", ["--threads", "0"])
    message = str(info.value)
    assert "--threads 0: must be above 0; allowed: a whole number above 0, or null" in message
