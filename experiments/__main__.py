"""Command line of the project: `python -m experiments COMMAND ...`.

    python -m experiments list
    python -m experiments run s1-mlp --trainer.max_epochs 2
    python -m experiments ui

Subcommands import their heavy dependencies (torch, lightning, mlflow) only when they
run, so `--help` and `list` answer at once.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "list": "show the experiment catalog, one line per experiment",
    "run": "train/validate/test one experiment as a tracked MLflow run",
    "ui": "serve the MLflow UI for the project's store on 127.0.0.1",
}


def _list(argv: list[str]) -> int:
    from experiments.config import catalog

    entries = catalog()
    width = max(len(e.name) for e in entries)
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.task:<5}  {entry.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Tracked, repeatable experiments for the seed tasks S0-S4.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<20} {text}" for name, text in COMMANDS.items())
        + "\n\n`python -m experiments COMMAND --help` describes one command.",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    rest = argv[1:]
    if args.command == "list":
        return _list(rest)
    if args.command == "run":
        from experiments.run import main as run_main

        return run_main(rest)
    if args.command == "ui":
        from experiments.ui import main as ui_main

        return ui_main(rest)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
