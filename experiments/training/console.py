"""Quiet output: a run prints its progress bar, its results and real problems, no chatter
(what is left out, and `-v`: docs/configuration.md). The libraries' INFO loggers are set
to WARNING; Python warnings raised while a run trains go to the run's `warnings.log`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

#: Loggers whose INFO lines are left out unless -v.
CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "mlflow")


#: Set by `configure` (`python -m experiments ... -v`): the libraries' INFO lines and the
#: warnings are shown. Lightning and MLflow set their loggers up when imported, so the
#: runner calls `quiet_libraries(echo_warnings)` again once they are.
echo_warnings = False


def configure(verbose: bool) -> None:
    """The whole process's console: `-v` shows the libraries' INFO lines and the warnings."""
    global echo_warnings
    echo_warnings = verbose
    quiet_libraries(verbose)


def quiet_libraries(verbose: bool = False) -> None:
    """Leave the libraries' INFO lines out (or, verbose, in: INFO)."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow's migrations: noise even for -v


@contextlib.contextmanager
def warnings_to(path: Path) -> Iterator[Path]:
    """Write the Python warnings raised inside the block to `path` (and stderr with -v)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log, warnings.catch_warnings():  # restores showwarning after
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))
            log.flush()
            if echo_warnings:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield path
