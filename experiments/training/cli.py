"""`python -m experiments run`: train, validate and test one experiment as one MLflow run.

    python -m experiments run s1-mlp                       # S1.2 on Fashion-MNIST
    python -m experiments run s4-mlp --model.activation swish --seed 1
    python -m experiments run --config best_trial.yaml     # a resolved config file
    python -m experiments run s1-mlp --check               # check everything, create nothing
    python -m experiments run --resume RUN_ID              # continue an interrupted run
    python -m experiments run s1-mlp --register fashion-mlp  # model registry: a new version
    python -m experiments run s1-mlp --run-name baseline --tag owner=ana  # your name and tags

Exit codes (experiments/errors.py): 0 finished, 2 refused before anything was created,
1 the run failed after it started, 128 + signal when interrupted (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from experiments import errors
from experiments.tracking import labels, store
from experiments.training import distributed, outputs
from experiments.training.interrupts import last_signal
from experiments.training.runner import HEADLINE_METRICS, RunResult, run_experiment


def print_summary(result: RunResult) -> None:
    print()
    for key in HEADLINE_METRICS:
        if key in result.test_metrics:
            print(f"  {key:<16} {result.test_metrics[key]:.4f}")
    if result.judgement:
        print(f"  fit judgement    {result.judgement}")
    print(
        f"\nMLflow run {result.run_id} ({result.status}) in experiment "
        f"'{result.experiment_name}' at {result.tracking_uri}"
    )
    if result.model_id:
        registered = f", registered as models:/{result.registered}" if result.registered else ""
        print(f"Model: models:/{result.model_id}{registered}")
    print(f"Open the UI: {store.ui_command(result.tracking_uri)}")


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("\n\n")[1] if __doc__ else ""  # the example commands
    parser = argparse.ArgumentParser(
        prog="python -m experiments run",
        description="Run one experiment from the catalog (see `python -m experiments list`)."
        f"\n\n{examples}",
        epilog="Overrides are dotted flags, e.g. --trainer.max_epochs 2 --model.lr 0.01\n"
        "--data.batch_size 32 --seed 1. `run NAME --help` lists every key of NAME.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # one example per line
        add_help=False,
        allow_abbrev=False,  # `--c` is an override typo, not --config or --check
        usage="python -m experiments run [NAME | --config FILE | --resume RUN_ID] "
        "[--KEY VALUE ...] [--check] [--tracking-uri URI] [--register NAME]",
    )
    parser.add_argument("--config", help="a resolved config YAML (as logged with every run)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the config, Trainer, data, store and names; create nothing (exit 0 or 2)",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue an interrupted run from its last checkpoint, into the same MLflow run",
    )
    outputs.add_flags(parser)
    labels.add_label_flags(parser)
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def split_name(extras: list[str]) -> tuple[str | None, list[str]]:
    """NAME (the first word that is not the value of a `--KEY`) and the overrides."""
    for index, token in enumerate(extras):
        if token.startswith("-"):
            continue
        previous = extras[index - 1] if index else ""
        if not (previous.startswith("--") and "=" not in previous):
            return token, extras[:index] + extras[index + 1 :]
    return None, extras


def usage_error(args: argparse.Namespace, name: str | None, overrides: list[str]) -> str | None:
    """Why this combination of NAME, --config, --resume and overrides cannot run, if so."""
    if args.resume and (name or overrides):
        given = " ".join([*filter(None, [name]), *overrides])
        return (
            "--resume RUN_ID takes no experiment, --config or overrides: the run's "
            f"logged config.yaml is used (got {given})"
        )
    if args.resume and (args.run_name or args.tag):
        return "--resume RUN_ID continues a run: it keeps its name and tags (no --run-name/--tag)"
    if args.name and args.config:
        return "give either NAME or --config FILE, not both"
    return None


def print_experiment_help(name: str) -> None:
    """The values experiment `name` will use, marked where they differ from the class
    default, and the command's own flags (`run NAME --help`)."""
    import json

    from experiments.training.config import MISSING, SHORTCUTS, parse

    def shown(value) -> str:
        return value if isinstance(value, str) else json.dumps(value, default=str)

    cfg = parse(name, [])
    print(f"usage: python -m experiments run {name} [--KEY VALUE ...] [--tracking-uri URI] [-v]")
    print(f"\n{cfg.task}: {cfg.description}" if cfg.task else f"\n{cfg.description}")
    print(
        "\ncommand flags:\n  --tracking-uri URI  MLflow store (default: sqlite:///mlruns/mlflow.db)"
        "\n  --config FILE       a resolved config.yaml (as logged with every run) instead of NAME"
        "\n  --resume RUN_ID     continue an interrupted run, into the same MLflow run"
        "\n  --check             check config, Trainer, data, store and names; create nothing"
        "\n  --register NAME     register the trained model as a new version of NAME"
        "\n  --run-name NAME     the MLflow run's name (default: EXPERIMENT-seedN)"
        "\n  --tag KEY=VALUE     a tag of your own on the run, repeatable"
        "\n  --no-system-metrics           do not record CPU, memory, GPU use (system/*)"
        "\n  --system-metrics-interval S   seconds between system metrics samples (10)"
        "\n  -v, --verbose       the libraries' INFO lines and warnings on stderr"
    )
    short = ", ".join(f"--{k}" for k, v in SHORTCUTS.items() if k != v)
    print(
        f"\nkeys of {cfg.source.name} and their values (* differs from the class default, "
        f"which follows);\noverride any with --KEY VALUE. Short forms: {short}."
    )
    for key in cfg.config_keys():
        value, default = cfg.get(key), cfg.class_default(key)
        differs = default is not MISSING and shown(default) != shown(value)  # a tuple as a list
        note = f"  (default {shown(default)})" if differs else ""
        print(f"{'*' if differs else ' '} --{key} {shown(value)}{note}")


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    args.name, overrides = split_name(extras)
    name = args.config or args.name
    problem = usage_error(args, name, overrides)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if name is None and args.help:
        parser.print_help()
        return 0
    if name is None and not args.resume:
        parser.print_usage(sys.stderr)
        print(
            "error: no experiment given: name one from `python -m experiments list` "
            "(e.g. `run s1-mlp`), or pass --config FILE or --resume RUN_ID",
            file=sys.stderr,
        )
        return 2
    try:
        if args.help:
            print_experiment_help(name)
            return 0
        run_name = labels.check_run_name(args.run_name)
        user_tags = labels.parse_tags(args.tag)
        if not args.resume:
            _fast_checks(args, name, overrides)
        cfg, point = _config(args, name, overrides)
        if args.check:
            return _check(cfg, args)
        result = run_experiment(
            cfg,
            args.tracking_uri,
            resume=point,
            outputs=outputs.from_args(args),
            tags=user_tags,
            run_name=run_name,
        )
    except (errors.Refused, errors.RunFailed) as exc:
        # A clear message, not a traceback (a run that failed is already marked FAILED
        # with a failure_reason tag).
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, SystemExit):
        # The run is marked KILLED and the resume command printed; exit as a shell would
        # for the signal (130 for Ctrl-C, 143 for SIGTERM), never 0.
        return 128 + int(last_signal() or signal.SIGINT)
    if distributed.is_global_zero():  # other DDP ranks would print the same summary again
        print_summary(result)
    return 0


def _fast_checks(args: argparse.Namespace, name: str, overrides: list[str]) -> None:
    """Keys, values, the registry name and the store's kind, before the libraries load."""
    from experiments.training import preflight
    from experiments.training.config import fast_check

    fast_check(name, list(overrides))
    preflight.check_register(args.register)
    preflight.check_store_kind(store.resolve_tracking_uri(args.tracking_uri))


def _config(args: argparse.Namespace, name: str | None, overrides: list[str]):
    """(config, resume point or None) of NAME / --config FILE with overrides, or --resume."""
    if args.resume:
        from experiments.training import resume

        return resume.prepare(args.resume, store.resolve_tracking_uri(args.tracking_uri))
    from experiments.training.config import parse

    return parse(name, list(overrides)), None


def _check(cfg, args: argparse.Namespace) -> int:
    """`--check`: every check of a run (preflight.py), nothing created; exit 0."""
    from experiments.training import console, preflight

    console.quiet_libraries(console.echo_warnings)
    found = preflight.check_run(cfg, store.resolve_tracking_uri(args.tracking_uri), args.register)
    print(f"ok: {cfg.name} ({cfg.source}): config, Trainer, data, store and names checked")
    for line in found:
        print(f"  {line}")
    print("nothing was created (--check)")
    return 0
