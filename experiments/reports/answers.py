"""The report's answer sheet: one row per question id of `experiments/SEED_TASKS.md`, read
from that file; `ANSWERS` says how the report answers each (docs/tracking.md, Report).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.seed_tasks import S3_REPORTED_OUTPUT, SEED_TASKS, meets_bar

#: The specification of the questions, beside this package's modules.
SEED_TASKS_MD = Path(__file__).resolve().parent.parent / "SEED_TASKS.md"
_ID = re.compile(r"^S\d")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    #: the file's command column, markdown
    command: str


def questions(path: Path = SEED_TASKS_MD) -> list[Question]:
    """Every question row of the file's tables, in the file's order."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) >= 3 and _ID.match(cells[0]):
            out.append(Question(cells[0], cells[1], cells[2]))
    return out


def markdown_cell(text: str) -> str:
    """Escaped text with its `code` spans as <code>."""
    parts = text.split("`")
    return "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
    )


@dataclass
class Shown:
    """What the report shows for one task: the run, how it came, what checks it."""

    task: str
    run: Any | None
    #: the command that produced the run, or that would produce one
    command: str
    #: why there is no run shown ("no run yet", "2 runs with other settings, ...")
    missing: str = ""
    #: a FINISHED evaluation run of the shown run (`evaluate RUN_ID`), if any
    evaluation: Any | None = None
    #: figures/*.png the shown run logged
    figures: tuple[str, ...] = ()
    #: S2: lines naming the problem classes; and whether the counts agree with the metrics
    problem_classes: tuple[str, ...] = ()
    counts_agree: bool | None = None


@dataclass
class Sheet:
    """Everything an answer may read."""

    shown: dict[str, Shown]
    #: the S4 activation-summary run, if any
    activations: Any | None = None
    #: the newest FINISHED parent run of an S3 study on s1-scratch, if any
    study: Any | None = None


@dataclass(frozen=True)
class Row:
    answer: str  # HTML
    command: str  # HTML
    run_id: str | None = None
    two_ways: str = "-"


def anchor(task: str) -> str:
    return "task-" + task.replace(".", "-")


def link(task: str, label: str | None = None) -> str:
    return f'<a href="#{anchor(task)}">{html.escape(label or f"section {task}")}</a>'


def code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _with_run(task: str, answer: Callable[[Shown], Row]) -> Callable[[Sheet], Row]:
    """`answer` of the task's shown run; where there is none, why not and what makes one."""

    def row(sheet: Sheet) -> Row:
        shown = sheet.shown[task]
        if shown.run is not None:
            return answer(shown)
        missing = f"{html.escape(shown.missing)}: see {link(task)}"
        return Row(missing, code(shown.command.split(";")[0]))

    return row


def _evaluated(shown: Shown) -> str:
    """Whether an `evaluate` run re-scored the shown run's model to the same test metrics."""
    run, ev = shown.run, shown.evaluation
    if ev is None:
        command = f"python -m experiments evaluate {run.info.run_id}"
        return f"no (to re-score the model: {code(command)})"
    ours, theirs = run.data.metrics.get("test/acc"), ev.data.metrics.get("test/acc")
    if ours is not None and theirs is not None and abs(ours - theirs) < 1e-6:
        return f"yes: evaluation run {code(ev.info.run_id)} re-scored the model, same test/acc"
    return (
        f"no: evaluation run {code(ev.info.run_id)} gives test/acc {fmt(theirs)} "
        f"(vs {fmt(ours)}; other data?)"
    )


def metrics(task: str, keys: tuple[str, ...], note: str = "") -> Callable[[Sheet], Row]:
    def answer(shown: Shown) -> Row:
        values = ", ".join(f"{k} {fmt(shown.run.data.metrics.get(k))}" for k in keys)
        text = f"{html.escape(values)} ({link(task)}){note}"
        return Row(text, code(shown.command), shown.run.info.run_id, _evaluated(shown))

    return _with_run(task, answer)


def bar(task: str, judgement: bool = False) -> Callable[[Sheet], Row]:
    """test/acc against the task's bar (and the fit judgement, learning curves)."""

    def answer(shown: Shown) -> Row:
        acc = shown.run.data.metrics.get("test/acc")
        verdict = "meets" if meets_bar(task, acc) else "below"
        text = f"test/acc {fmt(acc)}: {verdict} the bar (&ge; {SEED_TASKS[task].acc_bar:.2f})"
        if judgement:
            label = shown.run.data.tags.get("fit_judgement", "not recorded")
            curves = "figures/learning_curves.png" in shown.figures
            text += f"; fit judgement: {html.escape(label)}"
            text += "; learning curves: figure" if curves else "; no learning-curve figure"
        text += f" ({link(task)})"
        return Row(text, code(shown.command), shown.run.info.run_id, _evaluated(shown))

    return _with_run(task, answer)


def figure(task: str, path: str, what: str, prose: str = "") -> Callable[[Sheet], Row]:
    def answer(shown: Shown) -> Row:
        if path in shown.figures:
            text = f"{html.escape(what)}: figure {code(path)} in {link(task)}"
        else:
            text = f"no {code(path)} logged by this run ({link(task)})"
        if prose:
            text += f"; {html.escape(prose)}"
        return Row(text, code(shown.command), shown.run.info.run_id)

    return _with_run(task, answer)


def _final_parameters(run_metrics: dict[str, float]) -> str:
    """S0.1: the five parameters after the epoch."""
    names = ("W1_1", "W1_2", "b1", "W2_1", "b2")
    found = [f"{k} {run_metrics[f'final/{k}']:.4f}" for k in names if f"final/{k}" in run_metrics]
    return "after one epoch: " + (", ".join(found) or "not logged")


def _output(run_metrics: dict[str, float]) -> str:
    """S3: the forward pass's output."""
    y = run_metrics.get("y_pred")
    return "output not logged" if y is None else f"output {y:.4f} (rounded {y:.2f})"


def worked(task: str, what: str, detail: Callable | None = None) -> Callable[[Sheet], Row]:
    """A worked-example answer: where it is, and the chain rule / autograd agreement (or,
    for S3's output, the seed's reported value)."""

    def answer(shown: Shown) -> Row:
        run_metrics = shown.run.data.metrics
        text = html.escape(detail(run_metrics) if detail else what)
        text += f" ({link(task, f'section {task}, worked-example table')})"
        diff = run_metrics.get("max_abs_diff")
        two = "-"
        if diff is not None:
            two = f"yes: chain rule and autograd agree (largest difference {diff:.1e})"
        if detail is _output and "y_pred" in run_metrics:
            rounded = round(run_metrics["y_pred"], 2)
            agree = "yes" if rounded == S3_REPORTED_OUTPUT else "NO"
            two = f"{agree}: rounds to {rounded}, the seed task reports {S3_REPORTED_OUTPUT}"
        return Row(text, code(shown.command), shown.run.info.run_id, two)

    return _with_run(task, answer)


def not_yet(what_would: str) -> Callable[[Sheet], Row]:
    row = Row(f"<strong>not answered yet</strong>: {markdown_cell(what_would)}", "-")
    return lambda sheet: row


def prose(support: str, task: str | None = None) -> Callable[[Sheet], Row]:
    """A question a person answers in words; the numbers that support it."""

    where = f" ({link(task)})" if task else ""
    row = Row(f"<strong>prose</strong>, not computed: {markdown_cell(support)}{where}", "-")
    return lambda sheet: row


def s2_problem_classes(shown: Shown) -> Row:
    acc = fmt(shown.run.data.metrics.get("test/acc"))
    named = "; ".join(shown.problem_classes) or "not named: the run logged no confusion_matrix.csv"
    text = (
        f"test/acc {acc}; below it: {html.escape(named)} "
        f"({link('S2', 'section S2, problem classes')}); why: prose, not computed"
    )
    two = {
        True: "yes: per-class accuracy from the confusion counts equals the logged test/class_acc",
        False: "NO: the confusion counts and the logged test/class_acc disagree",
        None: "-",
    }[shown.counts_agree]
    if shown.evaluation is not None:
        two += f"; {_evaluated(shown)}"
    return Row(text, code(shown.command), shown.run.info.run_id, two)


def s3_studies(sheet: Sheet) -> Row:
    table = "python -m experiments compare --study s3-s1-scratch --group-by trainer.max_epochs"
    study = sheet.study
    if study is None:
        return Row(
            "no study yet: the studies vary epochs, learning rate and regularization "
            f"(not in the report; {code(table)} tabulates one)",
            code("python -m experiments search s3 --base s1-scratch"),
        )
    name = study.data.tags.get("study_name", "?")
    return Row(
        f"study {code(name)}: its trials are in the store, not in the report; "
        f"table per value: {code(f'python -m experiments compare --study {name}')}",
        code(f"python -m experiments search {name.split('-')[0]} --base s1-scratch"),
        study.info.run_id,
    )


def s4_activations(sheet: Sheet) -> Row:
    run = sheet.activations
    if run is None:
        return Row(
            f"no activation comparison yet ({link('S4')})",
            code("python -m experiments compare-activations"),
        )
    params = run.data.params
    text = (
        f"activation table ({html.escape(params.get('activations', '?'))} x "
        f"{html.escape(params.get('seeds', '?'))} seed(s), mean &plusmn; std) in "
        f"{link('S4', 'section S4, activation comparison')}; backward passes: in "
        f"{code('models/activations.py')}, not printed; analysis: prose"
    )
    return Row(text, code("python -m experiments compare-activations"), run.info.run_id)


_TRUE_FALSE = "a command that evaluates the statement numerically and prints true or false"
_CONV = "a command that computes conv output sizes and parameter counts for given layers and inputs"

#: question id -> how the report answers it.
ANSWERS: dict[str, Callable[[Sheet], Row]] = {
    "S0-Q1.1": worked("S0.1", "the forward equations"),
    "S0-Q1.2": worked("S0.1", "each parameter's derivative, chain rule beside autograd"),
    "S0-Q1.3": worked("S0.1", "", _final_parameters),
    "S0-Q2.1": metrics("S0.2", ("test/precision", "test/acc")),
    "S0-Q2.2": figure("S0.2", "figures/loss_per_epoch.png", "average training loss per epoch"),
    "S0-Q3.1": metrics("S0.3", ("test/precision", "test/acc")),
    "S0-Q3.2": figure("S0.3", "figures/loss_per_epoch.png", "average training loss per epoch"),
    "S1-Q1.1": not_yet(_TRUE_FALSE + " (the range of the sigmoid)"),
    "S1-Q1.2": not_yet(_TRUE_FALSE + " (the two derivatives at 0)"),
    "S1-Q1.3": not_yet("a true/false answer with the layer's weight shapes"),
    "S1-Q2.1": not_yet(
        "a command printing the derivatives of `models/activations.py`, checked against autograd"
    ),
    "S1-Q2.2": not_yet("a command printing dh/dw_j for each activation, checked against autograd"),
    "S1-Q2.3": not_yet("dead ReLU units counted in real runs"),
    "S1-Q2.4": not_yet("dead units counted for leaky ReLU and ELU runs"),
    "S1-Q3.1(a)": not_yet("a command convolving a given image and filter"),
    "S1-Q3.1(b)": not_yet(_CONV),
    "S1-Q3.2(a)": not_yet(_CONV),
    "S1-Q3.2(b)": not_yet("a true/false table of the five quantities"),
    "S1-Q3.2(c)": not_yet(_CONV + " (`model-summary` counts the catalog networks only)"),
    "S1-Q3.2(d)": not_yet(_CONV),
    "S1-Q3.2(e)": not_yet(_CONV),
    "S1-P1": bar("S1.1"),
    "S1-P2": bar("S1.2", judgement=True),
    "S1-P3": bar("S1.3", judgement=True),
    "S2-Q1": not_yet("a `worked` example of this network: chain rule against autograd"),
    "S2-Q2.1.1": not_yet(_CONV),
    "S2-Q2.1.2": not_yet(_CONV),
    "S2-Q2.1.3": not_yet(_CONV),
    "S2-Q2.1.4": not_yet("a command applying a given filter to a given input, flipped and not"),
    "S2-Q2.1.5": prose(
        "the S1.3 and S1.2 test accuracies and parameter counts compare a CNN "
        "with a fully connected network",
        "S1.3",
    ),
    "S2-P": _with_run("S2", s2_problem_classes),
    "S3-Q1.1": worked("S3", "", _output),
    "S3-Q1.2": worked("S3", "the element-level gradients (the matrix form is not printed)"),
    "S3-Q2": metrics("S1.1", ("test/acc", "test/f1"), note=": the from-scratch network is S1.1's"),
    "S3-Q3": s3_studies,
    "S3-Q4.1": prose("the S3 worked example and the S1.1 run show the workflow's steps", "S3"),
    "S3-Q4.2": prose("the forward pass of the S3 worked example", "S3"),
    "S3-Q4.3": prose("the chain-rule gradients of the S3 worked example", "S3"),
    "S3-Q4.4": prose("the S3-Q3 study numbers (row S3-Q3) back it"),
    "S4-1.1": not_yet("a command printing the forward equations with the layers' dimensions"),
    "S4-1.2": not_yet("a command printing the backward equations with the layers' dimensions"),
    "S4-1.3": figure(
        "S4", "figures/learning_curves.png", "training loss every 100 iterations (left panel)"
    ),
    "S4-1.4": figure(
        "S4", "figures/learning_curves.png", "train and validation accuracy (right panel)"
    ),
    "S4-1.5": figure(
        "S4", "figures/first_layer_weights.png", "W1 as images", prose="the analysis is prose"
    ),
    "S4-1.6": s4_activations,
}


def unknown(question: Question) -> Callable[[Sheet], Row]:
    """An id the file has and `ANSWERS` does not: said plainly, not dropped."""
    return not_yet(f"the report does not know this id yet; the file names: {question.command}")


def rows(sheet: Sheet, path: Path = SEED_TASKS_MD) -> list[tuple[Question, Row]]:
    return [(q, ANSWERS.get(q.id, unknown(q))(sheet)) for q in questions(path)]
