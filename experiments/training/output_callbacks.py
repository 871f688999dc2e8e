"""A run's outputs as Lightning callbacks, written once it is tested (`on_test_end`: the test
metrics are logged, the model holds the tested weights). A failure is a warning and the tag
`NAME_error`, never a failed run (an unreachable store is the run's own failure)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from experiments.tracking import outage


class RunOutput(Callback):
    """One output, written by `write` into `run` (URI, run id; default: the Trainer's logger's);
    `found`: what it adds to the run's `RunResult` (judgement, model id)."""

    name = ""
    what = ""

    def __init__(self, run: tuple[str, str] | None = None) -> None:
        self.run = run
        self.uri = ""
        self.found: dict[str, Any] = {}

    def target(self, trainer) -> tuple[Any, str]:
        from experiments.tracking import store

        self.uri, run_id = self.run or (trainer.logger.uri, trainer.logger.run_id)
        return store.client(self.uri), run_id

    def on_test_end(self, trainer, pl_module) -> None:
        self.guarded(trainer, pl_module)

    def guarded(self, trainer, pl_module) -> None:
        client, run_id = self.target(trainer)
        try:
            self.write(client, run_id, trainer, pl_module)
        except Exception as exc:
            if outage.is_outage(exc):  # the run fails with the store's message
                raise
            message = f"{type(exc).__name__}: {exc}"[:5000]
            print(f"warning: run {run_id}: {self.what} not logged: {message}", file=sys.stderr)
            client.set_tag(run_id, f"{self.name}_error", message)

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        raise NotImplementedError


class WarningsLog(RunOutput):
    """The Python warnings raised from the first `setup` to the test's `teardown` (or an
    exception) go to the run's `warnings.log` (and stderr with -v), not the terminal."""

    name, what = "warnings_log", "the warnings log"

    def __init__(self, run: tuple[str, str] | None = None) -> None:
        super().__init__(run)
        self.stack: contextlib.ExitStack | None = None
        self.path: Path | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        from experiments.training import console

        if self.stack is None:
            self.stack = contextlib.ExitStack()
            folder = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
            self.path = self.stack.enter_context(console.warnings_to(folder / "warnings.log"))

    def on_test_end(self, trainer, pl_module) -> None:
        return None  # the test's own warnings are logged at its teardown

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "test" and self.stack is not None:
            with self.stack:
                self.guarded(trainer, pl_module)
            self.stack = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.stack is None:
            return
        with self.stack:
            if not outage.is_outage(exception):  # an unreachable store would be waited for
                with contextlib.suppress(Exception):  # the run's own error is the one to report
                    self.write(*self.target(trainer), trainer, pl_module)
        self.stack = None

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        if self.path is not None and self.path.stat().st_size:
            client.log_artifact(run_id, str(self.path))


class CheckpointUpload(RunOutput):
    """The tested checkpoint (`trainer.ckpt_path`: the best one) under `checkpoints/`."""

    name, what = "checkpoint", "the checkpoint"

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        if trainer.ckpt_path:
            client.log_artifact(run_id, str(trainer.ckpt_path), "checkpoints")


class FitJudgement(RunOutput):
    """The fit judgement from the learning curves (experiments/tracking/judgement.py)."""

    name, what = "judgement", "the fit judgement"

    def __init__(self, run: tuple[str, str] | None = None) -> None:
        super().__init__(run)
        self.curves = None  # read once, shared with `Figures` on the same Trainer

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        from experiments.tracking import artifacts

        self.curves = artifacts.read_curves(client, run_id)
        judgement = artifacts.log_judgement(client, run_id, self.curves)
        self.found["judgement"] = None if judgement is None else str(judgement)


class Figures(RunOutput):
    """Loss and learning curves, the test confusion matrix (picture and counts), per-class
    accuracy and first-layer weights (experiments/tracking/artifacts.py)."""

    name, what = "figures", "the figures"

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        from experiments.tracking import artifacts

        judged = next((c for c in trainer.callbacks if isinstance(c, FitJudgement)), None)
        curves = judged.curves if judged is not None else None
        artifacts.log_figures(client, run_id, pl_module, trainer.datamodule, curves)


class ModelSummary(RunOutput):
    """Output shape and parameters per layer of the network (`model_summary.txt`, `.csv`)."""

    name, what = "model_summary", "the model summary"

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        from experiments.tracking import artifacts

        artifacts.log_model_summary(client, run_id, pl_module, trainer.datamodule)


class LoggedModel(RunOutput):
    """The tested network as the run's MLflow model; with `register`, a new version of that
    registered model (experiments/training/trained.py)."""

    name, what = "model", "the model"

    def __init__(self, run: tuple[str, str] | None = None, register: str | None = None) -> None:
        super().__init__(run)
        self.register = register

    def write(self, client, run_id: str, trainer, pl_module) -> None:
        from experiments.training import trained

        model_id, registered = trained.log_model(
            pl_module.network, trainer.datamodule, self.uri, run_id, self.register
        )
        self.found.update(model_id=model_id, registered=registered)


OUTPUTS: dict[str, type[RunOutput]] = {
    c.name: c
    for c in (WarningsLog, CheckpointUpload, FitJudgement, Figures, ModelSummary, LoggedModel)
}
