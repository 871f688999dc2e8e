"""Command line of the project: `python -m experiments COMMAND ...`.

    python -m experiments list
    python -m experiments run s1-mlp --trainer.max_epochs 2
    python -m experiments ui

Subcommands import their heavy dependencies (torch, lightning, mlflow) only when they
run, so `--help` and `list` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from experiments.tracking.model_checks import PICKLE_ENV
from experiments.tracking.outage import set_retry_window

#: MLflow's client and server send anonymous usage data unless this is true. The project's
#: commands turn it off for themselves and the MLflow servers they start (`ui`, `server`);
#: to opt in, set MLFLOW_DISABLE_TELEMETRY=false in the environment (experiments/docs/tracking.md).
TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"

# name -> (module with a `main(argv) -> int`, one-line description). Modules are imported
# only when their command runs.
COMMANDS = {
    "list": ("experiments.__main__", "show the experiment catalog, one line per experiment"),
    "run": (
        "experiments.training.cli",
        "train/validate/test one experiment as a tracked MLflow run",
    ),
    "worked": ("experiments.reports.worked", "worked examples S0.1 and S3: autograd vs chain rule"),
    "compare-activations": (
        "experiments.reports.compare_activations",
        "S4: train each activation for several seeds, log a summary run",
    ),
    "report": ("experiments.reports.report", "write one report of every seed task from the store"),
    "model-summary": (
        "experiments.reports.model_summary",
        "layer table (output shapes, parameters) of an experiment's network, no training",
    ),
    "search": ("experiments.search.cli", "run an Optuna study, tracked as nested MLflow runs"),
    "compare": (
        "experiments.reports.compare",
        "table of runs from the store, grouped, mean +- std",
    ),
    "clean": (
        "experiments.reports.clean",
        "delete selected runs (ids, a study, by age or state) with checkpoints and artifacts",
    ),
    "dashboard": (
        "experiments.services.dashboard",
        "live Optuna Dashboard of the studies, on 127.0.0.1",
    ),
    "evaluate": (
        "experiments.inference.evaluate",
        "score a trained model on a test set (any data of its classes), as an MLflow run",
    ),
    "predict": (
        "experiments.inference.predict",
        "top classes of image files, .npy arrays or test images for a trained model",
    ),
    "serve": ("experiments.inference.serve", "MLflow's REST model server for a trained model"),
    "ui": ("experiments.services.ui", "serve the MLflow UI for the project's store on 127.0.0.1"),
    "server": ("experiments.services.server", "start a shared MLflow server (PostgreSQL backend)"),
    "doctor": (
        "experiments.training.doctor",
        "check the store, data and storage; mark orphaned runs",
    ),
    "bench": ("experiments.bench", "benchmarks: accuracy, speed, search, kernels"),
}


def list_main(argv: list[str]) -> int:
    from experiments.training.config import catalog

    entries = catalog()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.task:<5}  {entry.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault(TELEMETRY_ENV, "true")  # before mlflow is imported; a user's value wins
    # Never unpickle a model, here or in the servers started from here (they inherit it):
    # MLflow then also checks a pt2 archive for pickle payloads (tracking/model_checks.py).
    os.environ[PICKLE_ENV] = "false"
    set_retry_window()  # how long MLflow's client waits for a store that does not answer
    # MLflow draws a progress bar for every artifact download (a config, a checkpoint): noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Tracked, repeatable experiments for the seed tasks S0-S4.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<20} {text}" for name, (_, text) in COMMANDS.items())
        + "\n\n`python -m experiments COMMAND --help` describes one command; -v after it\n"
        "shows the libraries' INFO lines and Python warnings.",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    # -v / --verbose, for every command: the libraries' INFO lines and Python warnings on
    # stderr; without it they are left out (warnings go to each run's warnings.log).
    from experiments.training import console

    verbose = bool({"-v", "--verbose"} & set(argv[1:]))
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    console.configure(verbose)
    if args.command == "list":
        return list_main(argv[1:])
    return importlib.import_module(COMMANDS[args.command][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
