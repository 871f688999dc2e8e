"""How many CPU threads torch uses for one run: measured at its start, then fixed and recorded.

    python -m experiments run s1-mlp                     # probe: the faster count now, fixed
    python -m experiments run s1-mlp --threads 2         # explicit: no probe
    python -m experiments run s1-mlp --threads adaptive  # re-measured at every epoch boundary
    python -m experiments bench threads [--quick]        # the policy against every fixed count

Why measure: on a 2-core Xeon (torch 2.14.1; `python -m experiments bench threads` and
`bench kernels [--busy]`, tables in experiments/docs/benchmarks.md) a second intra-op
thread makes the S1.3 CNN 1.4x and the 784-512-10 MLP 1.16-1.32x faster on a quiet machine,
LeNet at batch 4 1-15%; with one other busy process on the machine, two threads were 2-4x
SLOWER than one for every model (each parallel region waits for the thread the scheduler
took away). No rule that looks only at the model can be close to the better count in both
cases, so the run looks at the machine: before it trains it runs a few dozen real training
steps (forward, loss, backward, optimizer step) at each candidate count, alternating the
counts, on COPIES of the network and optimizer with every random generator restored after,
on the first batch of the training split, not drawn from its loader (`probe`). The faster
count wins (a higher count only if at least `MORE_THREADS_GAIN` faster: fewer threads
suffer less when a neighbour arrives later); the probe is bounded by `PROBE_STEPS`,
`PROBE_BUDGET_S` and `PROBE_SHARE` of the run's planned training (a short run times one
step per count) and is part of the run's time.

Why fix it: the thread count is part of what makes a run repeatable. Summing in another
order rounds differently (floating point is not associative). Measured on one epoch of
`s1-mlp` (test/acc 0.7847 with `--threads 1`, 0.8131 with `--threads 2`, each
reproducible): the same initial weights and the same batches in the same order at both
counts; the first step's loss differs by 1e-7 and its gradients by 2e-7 (relative), the
training loss by 2e-7 at step 200, 8e-6 at 300, 3e-3 at 400 and 20% from step 500 on:
reordering alone, amplified by SGD (experiments/docs/configuration.md).
So the count the probe chose becomes part of the run's resolved config (`threads: N` in
the logged config.yaml and in the params; how it was chosen is the tag
`torch_threads_reason`), and `run --config` of a logged config repeats the run exactly,
whatever the machine's load then. `--threads N` skips the probe.

`--threads adaptive` re-runs the probe at every epoch boundary and switches (`AdaptiveThreads`;
tag `torch_threads_schedule`, metric `threads` per epoch): faster when a neighbour arrives
or leaves mid-run, at the price of bit-for-bit repeatability.

Studies: a worker probes at its first trial and its later trials reuse that count
(`study_worker`); each trial records it. A study with N workers gives each
worker cores/N threads at most (experiments/search/study.py), so with one core per worker
there is nothing to probe. DDP: no probe; each of the node's processes takes
cores / processes (every rank computes the same count from the config, and ranks that
probed separately could disagree). A run on a GPU or other accelerator is not probed
either (its network does not run on the CPU threads).
"""

from __future__ import annotations

import copy
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

#: Timed training steps per candidate count, at most (plus one untimed step per count).
PROBE_STEPS = 24
#: The timed steps come in this many rounds, the counts' order alternating between rounds,
#: so a load that changes during the probe hits every count alike.
PROBE_ROUNDS = 4
#: Seconds after which no new round starts (at least one round runs): the S1.3 CNN's steps
#: take 50-100 ms, the MLPs' 1-4 ms.
PROBE_BUDGET_S = 0.5
#: ... and at most this share of the run's planned training (its steps times the first
#: step's seconds): a probe of 0.5 s would be 15% of a 3 s run.
PROBE_SHARE = 0.02
#: A count this much slower per step than the fastest is not run further, and the probe
#: stops after a round in which one thread was this much faster than every other count.
CLEAR_WIN = 1.3
#: A higher count is chosen only if its mean step is at least this much faster: on a near
#: tie fewer threads are the safer choice (a neighbour arriving later can make two threads
#: 10x slower on a 2-core machine, one thread 2x at most); 1.10 left LeNet at batch 4 (5-10%
#: faster on two threads) on one thread quiet (`bench threads`).
MORE_THREADS_GAIN = 1.05
#: `--threads adaptive`
ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str
    #: re-measured at every epoch boundary (`--threads adaptive`)
    adaptive: bool = False
    #: mean seconds per probe step at each candidate count (None when nothing was measured)
    timings: dict[int, float] | None = None

    def __str__(self) -> str:
        return f"{self.threads} ({self.reason})"


def available_cores() -> int:
    """Cores this process may run on (the affinity mask: taskset, cgroup cpusets, Slurm)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def candidates(limit: int) -> list[int]:
    """The counts a probe compares: 1, 2, 4, ... below `limit`, and `limit` itself."""
    counts, n = [], 1
    while n < limit:
        counts.append(n)
        n *= 2
    return [*counts, max(1, limit)]


def forward_mflop(network, example_batch) -> float:
    """Million floating-point operations of one forward pass of `network` on `example_batch`
    (`bench kernels` prints it beside its timings)."""
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


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Every random generator a training step may draw from (torch's CPU generator, Python's
    `random`, numpy's global one) as it was before the block."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def training_step(model, x, y) -> Callable[[], None]:
    """One real training step of `model` on (x, y), on copies of its network and optimizer:
    calling it changes nothing of the model's. `model` is a LightningModule with a `network`
    (its loss and `make_optimizer` are used where it has them) or a plain network (then
    cross-entropy and SGD)."""
    import torch
    import torch.nn.functional as F

    network = copy.deepcopy(getattr(model, "network", model))
    network.train()
    if hasattr(network, "training_terms"):  # the from-scratch network: hand-written gradients
        l2, scale, lr = (
            getattr(model, k, d) for k, d in (("l2_lambda", 0.0), ("loss_scale", 1.0), ("lr", 0.1))
        )

        def scratch_step() -> None:
            _, grads, _ = network.training_terms(x, y, l2, scale)
            network.sgd_step(grads, lr)

        return scratch_step
    loss = getattr(model, "loss", None) if network is not model else None
    loss = loss or F.cross_entropy
    make = getattr(model, "make_optimizer", None)
    optimizer = (
        make(network.parameters()) if make else torch.optim.SGD(network.parameters(), lr=1e-3)
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(network(x), y).backward()
        optimizer.step()

    return step


def measure(
    step: Callable[[], None],
    counts: list[int],
    *,
    steps: int = PROBE_STEPS,
    budget_s: float = PROBE_BUDGET_S,
    planned_steps: int | None = None,
) -> dict[int, float]:
    """Mean seconds per `step` at each thread count, every step timed on its own, in rounds
    whose order of counts alternates. The mean, not the median nor a trimmed mean: a run's
    time is the sum of its steps, and beside a busy process two threads alternate fast steps
    with steps 50x slower. A count whose steps already take `CLEAR_WIN` times the fastest
    count's is not run further; the probe ends after a round in which the fewest threads won
    by `CLEAR_WIN` (more threads must win every round), or when `budget_s` (or `PROBE_SHARE`
    of the `planned_steps` of the run, at the first step's seconds) is spent."""
    clock = time.perf_counter
    started = clock()
    # Untimed: one step per count first. The first step allocates gradients and optimizer
    # state, and a count's first parallel region starts its threads (the MLP's first step on
    # two threads took 14.5 ms, the next ones 2 ms): both once per run, not per step.
    warm_up = []
    for n in counts:
        with using(n):
            begun = clock()
            step()
            warm_up.append(clock() - begun)
    # The share is sized from the first step, which its allocation makes 2-3x slower than the
    # next: tried on 2026-12-07, a share from the measured steps (with the slowest step of
    # each count left out, then without) made the probes of `bench threads` pick two threads
    # beside the busy process in 4 of 18 rounds (2-5x slower): too few steps to see it.
    estimate = warm_up[0]
    if planned_steps is not None:
        budget_s = min(budget_s, PROBE_SHARE * planned_steps * estimate)
    # Steps per count and round: PROBE_STEPS / PROBE_ROUNDS, fewer where the rounds would
    # not fit in the budget (the S1.3 CNN: one).
    chunk = max(
        1, min(steps // PROBE_ROUNDS, int(budget_s / (PROBE_ROUNDS * len(counts) * estimate)))
    )
    per_step: dict[int, list[float]] = {n: [] for n in counts}

    def mean(n: int) -> float:
        return statistics.fmean(per_step[n])

    def spent() -> bool:  # at least one step per count, then the budget decides
        return all(per_step.values()) and clock() - started > budget_s

    for round_ in range(PROBE_ROUNDS):
        for n in counts if round_ % 2 == 0 else counts[::-1]:
            with using(n):
                for _ in range(chunk):
                    begun = clock()
                    step()
                    per_step[n].append(clock() - begun)
                    others = [mean(m) for m in counts if m != n and per_step[m]]
                    losing = others and len(per_step[n]) >= 2 and mean(n) > CLEAR_WIN * min(others)
                    if losing or spent():
                        break
        if all(per_step.values()):
            means = {n: mean(n) for n in counts}
            fewest_won = all(t >= CLEAR_WIN * means[counts[0]] for t in list(means.values())[1:])
            if fewest_won or spent():
                break
    return {n: statistics.fmean(times) for n, times in per_step.items()}


def pick(timings: dict[int, float]) -> int:
    """The count with the fastest mean step; a higher one only if `MORE_THREADS_GAIN` faster."""
    best = min(timings)
    for n in sorted(timings):
        if timings[n] * MORE_THREADS_GAIN < timings[best]:
            best = n
    return best


def probe(model, x, y, limit: int, planned_steps: int | None = None) -> ThreadChoice:
    """The faster thread count for `model` on this machine now, from real training steps on
    (x, y) at each candidate count up to `limit`; the model and every generator unchanged.
    `planned_steps`: the run's training steps, which bound the probe's share (`measure`)."""
    counts = candidates(limit)
    if len(counts) == 1:
        return ThreadChoice(counts[0], f"1 core available to this run{_why_one(limit)}")
    started = time.perf_counter()
    with random_state_kept():
        timings = measure(training_step(model, x, y), counts, planned_steps=planned_steps)
    seconds = time.perf_counter() - started
    chosen = pick(timings)
    measured = ", ".join(f"{n}: {t * 1e3:.2f}" for n, t in timings.items())
    return ThreadChoice(
        chosen,
        f"probe: ms per training step at {measured} threads ({seconds:.2f} s); "
        f"{limit} core(s) available",
        timings=timings,
    )


def _why_one(limit: int) -> str:
    cores = available_cores()
    return "" if cores == 1 else f" (torch's thread count was {limit} of {cores} cores)"


def choose(requested: int | None, network, example_batch, cap: int | None = None) -> ThreadChoice:
    """`requested` if given, else the probe's count for `network` on `example_batch` (random
    labels), up to the cores (and `cap`): for code that trains a bare network the way a run
    would (`bench speed`)."""
    import torch

    if requested is not None:
        return ThreadChoice(int(requested), "--threads")
    limit = max(1, min(available_cores(), cap or available_cores()))
    was_training = network.training
    network.eval()  # one sample through batch norm in training mode is refused
    try:
        with random_state_kept(), torch.no_grad():
            out = network(example_batch[:1])
            labels = torch.randint(0, out.shape[-1], (len(example_batch),))
    finally:
        network.train(was_training)
    return probe(network, example_batch, labels, limit)


# --- the run's choice ---------------------------------------------------------------------

#: A study worker's count, probed at its first trial (`study_worker`).
_PROCESS: dict[str, Any] = {"once": False, "choice": None}


@contextmanager
def study_worker(count: int) -> Iterator[None]:
    """A study worker's block: torch on `count` threads (its share of the cores), and the
    count probed at its first run reused by its later runs; both undone after the block, so
    a study run in-process leaves the next run of the process as it found it."""
    _PROCESS.update(once=True, choice=None)
    try:
        with using(count):
            yield
    finally:
        _PROCESS.update(once=False, choice=None)


def processes_per_node(trainer: dict[str, Any]) -> int:
    """How many training processes the Trainer settings start on this node (DDP: devices)."""
    devices = trainer.get("devices")
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif devices in (None, "auto"):
        count = 1
    elif str(devices) == "-1":
        count = available_cores()
    else:
        try:
            count = int(str(devices))
        except ValueError:
            count = 1
    strategy = str(trainer.get("strategy") or "auto")
    nodes = int(trainer.get("num_nodes") or 1)
    return max(1, count) if count > 1 or nodes > 1 or strategy.startswith("ddp") else 1


def planned_steps(trainer: dict[str, Any], data) -> int | None:
    """Training steps the Trainer settings plan for `data` (Lightning's rules: a float
    `limit_train_batches` up to 1.0 is a share of the batches, anything else a count; then
    `max_epochs`, capped by `max_steps`); None when no limit is set."""
    batches = math.ceil(len(data.train_x) / data.batch_size)
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, float) and limit <= 1.0:
        batches = int(batches * limit)
    elif limit is not None:
        batches = min(batches, int(limit))
    epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps") or -1
    total = batches * epochs if epochs is not None and epochs >= 0 else None
    if max_steps >= 0:
        total = max_steps if total is None else min(total, max_steps)
    return total


def _accelerator(trainer: dict[str, Any]) -> str:
    name = str(trainer.get("accelerator") or "auto").lower()
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def for_run(cfg, model, data, cap: int) -> ThreadChoice:
    """The thread count of run `cfg`: its `threads` key when set (a logged config's, or
    `--threads N`), else measured (`probe`), up to `cap` (torch's count when the run starts:
    a study worker's share of the cores) and the cores."""
    requested = cfg.threads
    if isinstance(requested, int):
        return ThreadChoice(requested, "--threads (or threads: in the config)")
    limit = max(1, min(available_cores(), cap))
    adaptive = requested == ADAPTIVE
    processes = processes_per_node(cfg.trainer)
    if processes > 1:
        share = max(1, limit // processes)
        return ThreadChoice(
            share,
            f"DDP: {processes} processes on this node share {limit} core(s); no probe"
            + (" (adaptive is not used under DDP)" if adaptive else ""),
        )
    accelerator = _accelerator(cfg.trainer)
    if accelerator != "cpu":
        return ThreadChoice(
            limit, f"accelerator {accelerator}: the network does not run on CPU threads; no probe"
        )
    remembered = _PROCESS["choice"]
    if _PROCESS["once"] and remembered is not None and not adaptive:
        return replace(
            remembered, reason=f"this worker's probe at its first trial: {remembered.reason}"
        )
    x, y = data.train_x[: data.batch_size], data.train_y[: data.batch_size]
    # A study worker's count serves all its trials: its probe takes the full budget.
    planned = None if _PROCESS["once"] else planned_steps(cfg.trainer, data)
    choice = replace(probe(model, x, y, limit, planned), adaptive=adaptive)
    if _PROCESS["once"]:
        _PROCESS["choice"] = choice
    if adaptive:
        choice = replace(choice, reason=f"adaptive, epoch 0 {choice.reason}")
    return choice


def recorded(cfg, choice: ThreadChoice):
    """`cfg` with the chosen count as its `threads` key (what the run logs in config.yaml and
    its params, so `run --config` repeats it); an adaptive run keeps `threads: adaptive`."""
    if choice.adaptive or cfg.threads == choice.threads:
        return cfg
    namespace = cfg.namespace.clone()
    namespace.threads = choice.threads
    return replace(cfg, namespace=namespace)


def callbacks(choice: ThreadChoice, data) -> list[Any]:
    """The Trainer callbacks of the choice: `AdaptiveThreads` for `--threads adaptive`."""
    if not choice.adaptive:
        return []
    return [
        adaptive_callback(choice, data.train_x[: data.batch_size], data.train_y[: data.batch_size])
    ]


def adaptive_callback(choice: ThreadChoice, x, y):
    """A Lightning callback that re-runs the probe at every epoch boundary after the first,
    switches torch's count, logs the `threads` metric per epoch and the schedule as the tag
    `torch_threads_schedule`."""
    import lightning as L
    import torch

    class AdaptiveThreads(L.Callback):
        def __init__(self) -> None:
            self.schedule: list[tuple[int, int]] = []
            self.limit = max(choice.timings or {1: 0.0})

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            epoch = trainer.current_epoch
            if self.schedule:  # the full budget: one step per count missed a neighbour
                torch.set_num_threads(probe(pl_module, x, y, self.limit).threads)
            self.schedule.append((epoch, torch.get_num_threads()))
            logger = trainer.logger
            if logger is None:
                return
            logger.log_metrics(
                {"threads": float(torch.get_num_threads())}, step=trainer.global_step
            )
            text = ", ".join(f"epoch {e}: {n}" for e, n in self.schedule)
            experiment = getattr(logger, "experiment", None)
            if trainer.is_global_zero and hasattr(experiment, "set_tag"):
                experiment.set_tag(logger.run_id, "torch_threads_schedule", text)

    return AdaptiveThreads()
