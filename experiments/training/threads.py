"""How many CPU threads torch uses for one run: `--threads N`, or chosen from the work per batch.

    python -m experiments run s1-cnn                 # auto: all cores for the CNN
    python -m experiments run s1-mlp --threads 2     # explicit

Why not torch's default (one thread per core): measured on a 2-core Xeon (torch 2.14.1;
`python -m experiments bench kernels [--busy]` prints the comparison, the table is in
experiments/docs/benchmarks.md "Threads per model and torch.compile"), a second intra-op thread makes the S1.3 CNN 1.4x and the 784-512-10 MLP
1.16-1.32x faster on a quiet machine (two runs), and the 784-128-10 MLP at batch 64 and LeNet at batch
4 1-15%: their operations are small to split. With one other busy process on the
machine, two threads were 2-4x SLOWER than one for every model (each parallel region
waits for the thread the scheduler took away). So a second thread is used only where a
batch is big enough to pay for it: at least `MIN_MFLOP_PER_THREAD` million floating-point
operations per thread in one forward pass, counted once with torch's FLOP counter on one
batch. On a shared or busy machine, pass `--threads 1`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

#: Forward MFLOP per batch each thread must get. The 784-128-10 MLP at batch 64 does 13
#: (+10-15% from a second thread), LeNet at batch 4 5.2 (+1-3%), the 784-512-10 MLP 52
#: (1.16-1.32x), the S1.3 CNN 1,298 (1.4x).
MIN_MFLOP_PER_THREAD = 25.0


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} ({self.reason})"


def available_cores() -> int:
    """Cores this process may run on (the affinity mask: taskset, cgroup cpusets, Slurm)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def forward_mflop(network, example_batch) -> float:
    """Million floating-point operations of one forward pass of `network` on `example_batch`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = network.training
    network.eval()  # no dropout/batch-norm statistics updates from the count
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(example_batch)
    finally:
        network.train(was_training)
    return counter.get_total_flops() / 1e6


def choose(requested: int | None, network, example_batch, cap: int | None = None) -> ThreadChoice:
    """The thread count for a run: `requested` if given, else by work per batch.

    `cap` bounds the automatic choice (a study with N workers gives each cores/N).
    """
    cores = available_cores()
    if requested is not None:
        return ThreadChoice(int(requested), "--threads")
    limit = max(1, min(cores, cap or cores))
    mflop = forward_mflop(network, example_batch)
    threads = max(1, min(limit, int(mflop // MIN_MFLOP_PER_THREAD)))
    return ThreadChoice(
        threads,
        f"auto: {mflop:.1f} MFLOP per forward batch, {MIN_MFLOP_PER_THREAD:g} per thread, "
        f"{limit} core(s) available",
    )


@contextmanager
def using(threads: int):
    """Set torch's intra-op threads for a block and restore the previous count after it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
