"""What the run path's thread policy and its choice not to compile rest on, measured.

    python -m experiments bench kernels                 # threads and torch.compile
    python -m experiments bench kernels --busy          # threads with one busy process beside
    python -m experiments bench kernels --no-compile    # threads only
    python -m experiments bench kernels --quick         # 20 batches, one measured epoch (CI)

Bare training loops (forward, loss, backward, step) over in-memory Fashion-MNIST or
generated CIFAR-shaped tensors, so only the kernels differ:

- threads: seconds per epoch with 1 thread and with every core, for models from 5 to 1,298
  forward MFLOP per batch: 784-128-10 MLP at batch 64 (13 MFLOP), LeNet at batch 4 (5),
  784-512-10 MLP (52), S1.3 CNN (1,298; 150 batches). `--busy` runs a CPU-bound Python loop
  in another process meanwhile, the situation of a shared machine or a second study
  worker. Why neither count suits every machine, and how a run chooses: training/threads.py
  (`bench threads` times that choice against the fixed counts).
- compile: eager against `torch.compile(model)` for the S1.2 MLP (one epoch) and the S1.3
  CNN (100 batches): the warm-up epoch (which compiles) and the steady-state time.

`--quick` caps every epoch at 20 batches and measures one epoch after the warm-up instead
of three: the rows and columns of the full run in seconds, for a check of the output
(tests/test_bench_kernels.py), not a measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
from collections.abc import Callable, Sequence

#: --quick: batches per epoch (every case) and measured epochs after the warm-up.
QUICK_BATCHES, QUICK_EPOCHS = 20, 1


def _busy_loop() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _epoch_seconds(
    make_network: Callable, x, y, batch_size: int, batches: int | None, epochs: int = 3
):
    """(warm-up epoch incl. any compilation, median of `epochs` measured epochs) in seconds,
    from the speed benchmark's bare loop (SGD lr 0.01)."""
    import torch

    from experiments.bench.speed import bare_epoch_times

    times = bare_epoch_times(
        make_network,
        lambda params: torch.optim.SGD(params, lr=0.01),
        x,
        y,
        batch_size,
        epochs,
        batches,
    )
    return times[0], statistics.median(times[1:])


def _data():
    import tempfile
    from pathlib import Path

    import torch

    from datamodules import FashionMNISTDataModule
    from experiments.bench.speed import fashion_source

    # The splits live in memory after setup(); a generated stand-in (no real data
    # installed) is deleted with the folder.
    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as work:
        fashion_dir, kind = fashion_source(Path(work))
        fashion = FashionMNISTDataModule(data_dir=str(fashion_dir), download=False)
        fashion.setup()
    generator = torch.Generator().manual_seed(0)
    cifar_x = torch.randn(2000, 3, 32, 32, generator=generator)
    cifar_y = torch.randint(0, 5, (2000,), generator=generator)
    return (fashion.train_x, fashion.train_y), (cifar_x, cifar_y), kind


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments bench kernels", description=__doc__
    )
    parser.add_argument("--busy", action="store_true", help="one busy process runs meanwhile")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile part")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_BATCHES} batches per epoch, {QUICK_EPOCHS} measured epoch (CI: a check "
        "of the output, not a measurement)",
    )
    args = parser.parse_args(argv)
    epochs = QUICK_EPOCHS if args.quick else 3

    def capped(batches: int | None) -> int | None:
        return QUICK_BATCHES if args.quick else batches

    import torch

    from experiments.training.threads import available_cores, forward_mflop
    from models.components import MLP, FourBlockCNN, LeNet

    (fx, fy), (cx, cy), kind = _data()
    cores = available_cores()
    cnn_batches = capped(150)
    cases = [
        ("MLP 784-128-10, batch 64", lambda: MLP(784, 10, [128]), fx, fy, 64, capped(None)),
        ("LeNet, batch 4", lambda: LeNet(num_classes=5), cx, cy, 4, capped(None)),
        ("MLP 784-512-10, batch 64", lambda: MLP(784, 10, [512]), fx, fy, 64, capped(None)),
        (f"S1.3 CNN, batch 64, {cnn_batches} batches", FourBlockCNN, fx, fy, 64, cnn_batches),
    ]
    busy = None
    if args.busy:
        busy = multiprocessing.get_context("spawn").Process(target=_busy_loop, daemon=True)
        busy.start()
    default_threads = torch.get_num_threads()
    try:
        print(f"data: {kind}; {cores} core(s); busy process beside: {'yes' if busy else 'no'}")
        if args.quick:
            print(f"quick: {QUICK_BATCHES} batches per epoch, {epochs} measured epoch")
        print(f"{'model':<34} {'MFLOP/batch':>11} {'1 thread s':>11} {f'{cores} threads s':>11}")
        for name, make, x, y, batch, batches in cases:
            mflop = forward_mflop(make(), x[:batch])
            seconds = []
            for threads in (1, cores):
                torch.set_num_threads(threads)
                seconds.append(_epoch_seconds(make, x, y, batch, batches, epochs)[1])
            print(f"{name:<34} {mflop:>11.1f} {seconds[0]:>11.3f} {seconds[1]:>11.3f}")
    finally:
        torch.set_num_threads(default_threads)
        if busy is not None:
            busy.terminate()
    if args.no_compile:
        return 0

    print(f"\ntorch.compile ({cores} thread(s) for the CNN, 1 for the MLP)")
    print(f"{'model':<34} {'mode':<8} {'warm-up s':>12} {'steady s':>9}")
    for name, make, threads, batches in (
        ("MLP 784-128-10, one epoch", lambda: MLP(784, 10, [128]), 1, capped(None)),
        (f"S1.3 CNN, {capped(100)} batches", FourBlockCNN, cores, capped(100)),
    ):
        torch.set_num_threads(threads)
        for mode, build in (("eager", make), ("compile", lambda make=make: torch.compile(make()))):
            first, steady = _epoch_seconds(build, fx, fy, 64, batches, epochs)
            print(f"{name:<34} {mode:<8} {first:>12.2f} {steady:>9.3f}")
    torch.set_num_threads(default_threads)
    return 0
