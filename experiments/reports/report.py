"""One self-contained HTML report of every seed task, read from the MLflow store.

    python -m experiments report                                   # -> reports/report.html
    python -m experiments report --output /tmp/r.html --tracking-uri sqlite:///other/mlflow.db
    python -m experiments report --run S1.2=RUN_ID                 # this run for S1.2

What the report holds (the answer sheet of `experiments/SEED_TASKS.md`, then one section
per seed task) and which run each task shows (`experiments.reports.choice`): docs/tracking.md
(Report).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import html
import io
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError
from experiments.reports import answers
from experiments.reports.answers import Sheet, Shown, anchor, fmt
from experiments.reports.choice import (
    Choice,
    Reference,
    choose_training_run,
    override_flags,
    parse_picks,
    picked_runs,
    references,
)
from experiments.reports.confusions import class_accuracies, overall_accuracy, problem_classes
from experiments.reports.stats import mean_std
from experiments.seed_tasks import (
    S2_REPORTED_ACC,
    S2_REPORTED_CLASS_ACC,
    S3_REPORTED_OUTPUT,
    S4_REPORTED_ACTIVATIONS,
    S4_SUMMARY_KIND,
    SEED_TASKS,
    SeedTask,
    meets_bar,
)

DEFAULT_OUTPUT = "reports/report.html"
HEADLINE = ("test/acc", "test/precision", "test/recall", "test/f1")
# Per-run figures as logged by experiments.tracking.artifacts, in reading order.
FIGURE_ORDER = (
    "figures/loss_per_epoch.png",
    "figures/learning_curves.png",
    "figures/confusion_matrix.png",
    "figures/per_class_accuracy.png",
    "figures/first_layer_weights.png",
)
SUMMARY_FIGURES = (
    "figures/activation_loss.png",
    "figures/activation_val_acc.png",
    "figures/activation_bars.png",
)


@dataclass(frozen=True)
class Task(SeedTask):
    """A seed task (its facts from `experiments.seed_tasks`) and how the report gets a run."""

    #: the command(s) that produce a run, `;`-separated
    command: str = ""
    worked_artifact: str | None = None


#: task id -> (command that produces a run, worked-example artifact)
HOW_TO_RUN: dict[str, tuple[str, str | None]] = {
    "S0.1": ("python -m experiments worked s0.1", "worked_s0.1.txt"),
    "S0.2": ("python -m experiments run s0-mlp", None),
    "S0.3": ("python -m experiments run s0-cnn", None),
    "S1.1": ("python -m experiments run s1-scratch", None),
    "S1.2": ("python -m experiments run s1-mlp", None),
    "S1.3": ("python -m experiments run s1-cnn", None),
    "S2": ("python -m experiments run s2-cnn", None),
    "S3": ("python -m experiments worked s3", "worked_s3.txt"),
    "S4": ("python -m experiments run s4-mlp; python -m experiments compare-activations", None),
}
COMPARE_ACTIVATIONS_COMMAND = "python -m experiments compare-activations"

TASKS = tuple(Task(*astuple(seed), *HOW_TO_RUN[task_id]) for task_id, seed in SEED_TASKS.items())


# --------------------------------------------------------------------------------------------
# Reading the store.


class Store:
    """Runs and artifacts of one tracking URI; artifacts are downloaded into `tmp`."""

    def __init__(self, uri: str, tmp: Path) -> None:
        from experiments.tracking import store as tracking_store

        self.uri = uri
        self.client = tracking_store.client(uri)
        self.tmp = tmp
        experiments = self.client.search_experiments()
        self.experiment_ids = [e.experiment_id for e in experiments]
        self.experiment_names = {e.experiment_id: e.name for e in experiments}

    def finished(self, task: str) -> list[Any]:
        """FINISHED runs tagged task=<task>, newest first."""
        return self.search(f"tags.task = '{task}'")

    def search(self, filter_string: str) -> list[Any]:
        """FINISHED runs matching `filter_string`, newest first."""
        if not self.experiment_ids:
            return []
        return self.client.search_runs(
            self.experiment_ids,
            filter_string=f"{filter_string} and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )

    @functools.cached_property
    def evaluations(self) -> dict[str, Any]:
        """training run id -> its newest FINISHED evaluation run (`evaluate RUN_ID`)."""
        found: dict[str, Any] = {}
        for run in self.search("tags.kind = 'evaluation'"):
            found.setdefault(run.data.tags.get("evaluated_run_id", ""), run)
        return found

    def s3_study(self) -> Any | None:
        """The newest parent run of a study on s1-scratch (S3-Q3), if any."""
        for run in self.search("tags.study_role = 'parent'"):
            if run.data.tags.get("study_name", "").split("-", 1)[-1] == "s1-scratch":
                return run
        return None

    def artifact_paths(self, run_id: str, folder: str = "") -> list[str]:
        try:
            return [f.path for f in self.client.list_artifacts(run_id, folder or None)]
        except Exception:  # an artifact store that is gone must not stop the whole report
            return []

    def download(self, run_id: str, path: str) -> Path | None:
        try:
            local = self.client.download_artifacts(run_id, path, str(self.tmp / run_id))
        except Exception:
            return None
        return Path(local)

    def text(self, run_id: str, path: str) -> str | None:
        local = self.download(run_id, path)
        return local.read_text() if local is not None and local.is_file() else None


def latest_of_kind(runs: list[Any], kind: str) -> tuple[Any | None, int]:
    found = [r for r in runs if r.data.tags.get("kind") == kind]
    return (found[0] if found else None), len(found)


# --------------------------------------------------------------------------------------------
# HTML pieces.


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def no_run(command: str, what: str = "run") -> str:
    """'no run yet' and the `;`-separated command(s) that produce one."""
    commands = "".join(f"<code>{esc(c.strip())}</code><br>" for c in command.split(";"))
    return (
        f'<p class="norun"><strong>no {esc(what)} yet</strong>. Produce one with:<br>{commands}</p>'
    )


def run_header(
    store: Store, run: Any, count: int, count_label: str = "finished runs of this kind"
) -> str:
    tags = run.data.tags
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
    data = ""
    if "lineage.train_size" in tags:
        data = (
            f"{esc(tags.get('dataset', '?'))} from {esc(tags.get('lineage.source', '?'))}: "
            f"train {esc(tags.get('lineage.train_size'))} / val "
            f"{esc(tags.get('lineage.val_size', '?'))} / test {esc(tags.get('lineage.test_size', '?'))}"
        )
    items = [
        ("run", f"{esc(run.info.run_name)} <code>{esc(run.info.run_id)}</code>"),
        (
            "MLflow experiment",
            esc(store.experiment_names.get(run.info.experiment_id, run.info.experiment_id)),
        ),
        ("started", esc(started)),
        ("catalog experiment", esc(tags.get("experiment", ""))),
        ("data", data),
        ("git commit", f"<code>{esc(tags.get('git_commit', '-')[:12])}</code>"),
        (count_label, str(count)),
    ]
    if "study_name" in tags:
        items.append(
            ("Optuna study", esc(f"{tags['study_name']} trial {tags.get('trial_number')}"))
        )
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in items if v not in ("", "-"))
    return f'<table class="meta">{rows}</table>'


def headline(task: Task, run: Any, group: Sequence[Any] = ()) -> tuple[str, str]:
    """The headline metrics table and a one-line verdict for the overview; with two or more
    runs in `group` (the catalog's settings, several seeds), their mean &plusmn; sample std."""
    metrics = run.data.metrics
    acc = metrics.get("test/acc")
    if task.acc_bar is not None:
        ok = meets_bar(task.id, acc)
        bar = f"&ge; {task.acc_bar:.2f}"
        verdict = (
            f'<span class="{"ok" if ok else "bad"}">'
            f"{'meets' if ok else 'below'} the bar ({fmt(acc)} vs {bar})</span>"
        )
    elif task.id == "S2":
        bar = f"{S2_REPORTED_ACC:.2f} (reported)"
        verdict = f"{fmt(acc)} vs {S2_REPORTED_ACC:.2f} reported"
    else:
        bar, verdict = esc(task.bar_text), f"test/acc {fmt(acc)} (no bar)"
    spread = len(group) >= 2
    rows = []
    for key in HEADLINE:
        stats = []
        if spread:
            mean, std = mean_std([r.data.metrics[key] for r in group if key in r.data.metrics])
            stats = [f"{fmt(mean)} &plusmn; {fmt(std)}"]
        rows.append([esc(key), fmt(metrics.get(key)), *stats, bar if key == "test/acc" else "-"])
    header = ["metric", "this run"]
    if spread:
        header.append(f"mean ± std of the {len(group)} runs with the catalog's settings")
    return table([*header, "seed task"], rows), verdict


def read_confusions(store: Store, run_id: str) -> tuple[list[str], list[list[int]]] | None:
    """The run's confusion_matrix.csv (names, counts); None when it logged none."""
    from experiments.tracking.artifacts import CONFUSION_CSV, read_confusion_csv

    text = store.text(run_id, CONFUSION_CSV)
    try:
        return None if text is None else read_confusion_csv(text)
    except ValueError:
        return None


def counts_agree(run: Any, names: list[str], counts: list[list[int]]) -> bool | None:
    """Whether the per-class accuracy from the counts equals the logged test/class_acc."""
    pairs = [
        (run.data.metrics.get(f"test/class_acc/{name}"), acc)
        for name, acc in zip(names, class_accuracies(counts), strict=True)
        if acc is not None
    ]
    if not pairs or any(logged is None for logged, _ in pairs):
        return None
    return all(abs(logged - acc) < 1e-6 for logged, acc in pairs)


def s2_problems(store: Store, run: Any, shown: Shown) -> str:
    """The classes below the overall accuracy with their largest confusions, from the
    counts the run logged; fills `shown` for the answer sheet."""
    found = read_confusions(store, run.info.run_id)
    if found is None:
        return "<p>not named: this run logged no confusion_matrix.csv (an older run)</p>"
    names, counts = found
    problems = problem_classes(names, counts)
    shown.problem_classes = tuple(str(p) for p in problems)
    shown.counts_agree = counts_agree(run, names, counts)
    overall = overall_accuracy(counts)
    intro = (
        f"<p>Classes below the overall test accuracy ({fmt(overall)}), worst first, each "
        "with its two largest confusions (test images of the class predicted as another), "
        "from the run's <code>confusion_matrix.csv</code> (rows = true class):</p>"
    )
    if not problems:
        return intro + "<p>none: every class is at or above the overall accuracy</p>"
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return f'{intro}<ul class="problems">{items}</ul>'


def s2_per_class(run: Any) -> str:
    metrics = run.data.metrics
    rows = []
    for name, reported in S2_REPORTED_CLASS_ACC.items():
        ours = metrics.get(f"test/class_acc/{name}")
        diff = "-" if ours is None else f"{ours - reported:+.3f}"
        rows.append([esc(name), fmt(ours, 3), f"{reported:.2f}", diff])
    note = (
        "<p>Per-class test accuracy of this run beside the seed task's reported numbers. "
        "The seed names Shirt, Coat and T-shirt/top as the problematic classes (confused "
        "with each other): compare with the confusion matrix.</p>"
    )
    return note + table(["class", "this run", "seed task (reported)", "difference"], rows)


def figures_html(store: Store, run_id: str, wanted: Sequence[str] | None = None) -> list[str]:
    """Every PNG under figures/ of the run, the known ones first, embedded as base64."""
    available = [p for p in store.artifact_paths(run_id, "figures") if p.endswith(".png")]
    order = list(wanted) if wanted is not None else list(FIGURE_ORDER)
    ordered = [p for p in order if p in available] + sorted(p for p in available if p not in order)
    parts = []
    for path in ordered:
        local = store.download(run_id, path)
        if local is not None and local.is_file():
            parts.append(png_figure(local, path))
    return parts


def drawn_from_history(store: Store, run: Any) -> list[str]:
    """Curves drawn by the report when a run logged no figures (e.g. an older run)."""
    try:
        from experiments.tracking import figures
        from experiments.tracking.artifacts import read_curves

        curves = read_curves(store.client, run.info.run_id)
        out = store.tmp / f"{run.info.run_id}-history.png"
        name = run.data.tags.get("experiment", run.info.run_id)
        if curves.has_validation:
            figures.plot_learning_curves(
                curves.points(), out, f"{name}: learning curves", x_label=curves.x_label
            )
        elif curves.raw["train/loss"]:
            epochs, losses = curves.epoch_losses()
            figures.plot_loss_per_epoch(epochs, losses, out, f"{name}: training loss per epoch")
        else:
            return []
    except Exception as exc:  # the report still stands without this picture
        return [f"<p>(could not draw curves from the metric history: {esc(exc)})</p>"]
    return [png_figure(out, "learning curves drawn by the report from the metric history")]


def why_chosen(choice: Choice, count_others: int) -> str:
    """One paragraph: how the shown run was chosen among the task's runs."""
    ignored = "the seed, the thread count, where the data is looked up and display settings"
    if choice.how == "hand":
        diffs, name = choice.picked_differences, esc(choice.reference)
        if not choice.reference:
            how = "is not compared: the catalog has no experiment of this task"
        elif diffs:
            differ = esc("; ".join(map(str, diffs)))
            how = f"differs from the catalog's <code>{name}</code> in: {differ}"
        else:
            how = f"has the settings of the catalog's <code>{name}</code>"
        text = f"<strong>Chosen by hand</strong> (<code>report --run</code>); this run {how}."
    else:
        text = (
            "<strong>Chosen</strong>: the latest FINISHED run whose config equals the catalog's "
            f"<code>{esc(choice.reference)}</code> apart from {esc(ignored)}; "
            f"{len(choice.matching)} such run{'s' if len(choice.matching) != 1 else ''}."
        )
    if count_others:
        text += (
            f" {count_others} run{'s' if count_others != 1 else ''} with other settings "
            f"not shown (<code>report --run {esc(choice.run.data.tags.get('task', 'TASK'))}"
            "=RUN_ID</code> shows one)."
        )
    return f'<p class="choice">{text}</p>'


def other_settings_box(task: Task, choice: Choice) -> str:
    """No run with the catalog's settings, but runs with other settings: say so, list them."""
    n = len(choice.others)
    items = "".join(
        f"<li>{esc(run.info.run_name)} <code>{esc(run.info.run_id)}</code>: "
        f"{esc('; '.join(map(str, diffs)) or 'no catalog experiment to compare with')}</li>"
        for run, diffs in choice.others[:10]
    )
    first = task.command.split(";")[0].strip()
    return (
        f'<p class="norun"><strong>{esc(others_line(n))}</strong> '
        f"(<code>{esc(choice.reference or '-')}</code>). Produce one with "
        f"<code>{esc(first)}</code>, or show one of these with "
        f"<code>python -m experiments report --run {esc(task.id)}=RUN_ID</code>:</p>"
        f"<ul>{items}</ul>"
    )


def others_line(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''} with other settings, none with the catalog's"


def data_needed(refs: list[Reference]) -> str:
    """For a task on CIFAR-100: what its data needs, in the run's own error message's words."""
    if not any(
        r.params.get("data.class_path", "").endswith("CIFAR100SuperclassDataModule") for r in refs
    ):
        return ""
    from datamodules.cifar100 import how_to_supply

    items = "".join(f"<li>{answers.markdown_cell(line)}</li>" for line in how_to_supply(True))
    return f'<div class="norun"><p>CIFAR-100 is needed. What you can do:</p><ul>{items}</ul></div>'


def training_section(
    store: Store, task: Task, runs: list[Any], refs: list[Reference], shown: Shown
) -> tuple[str, str]:
    """A training task's section and its overview verdict; fills `shown`."""
    choice = choose_training_run(runs, refs, shown.run)
    shown.run = choice.run
    if choice.run is None:
        if choice.others:
            shown.missing = others_line(len(choice.others))
            return other_settings_box(task, choice), shown.missing
        shown.missing = "no run yet"
        return no_run(task.command) + data_needed(refs), "no run yet"
    run = choice.run
    run_id = run.info.run_id
    reference = choice.reference or run.data.tags.get("experiment", "NAME")
    shown.command = f"python -m experiments run {reference}"
    if choice.how == "hand" and choice.picked_differences:
        shown.command += " " + override_flags(choice.picked_differences)
    count_others = sum(1 for r, _ in choice.others if r.info.run_id != run_id)
    parts = [
        why_chosen(choice, count_others),
        run_header(store, run, len(choice.matching), "runs with the catalog's settings"),
    ]
    metrics_html, verdict = headline(task, run, choice.matching)
    if choice.how == "hand":
        verdict = f"chosen by hand: {verdict}"
    parts += ["<h3>Headline test metrics</h3>", metrics_html]
    if task.id == "S2":
        parts += ["<h3>Per-class accuracy</h3>", s2_per_class(run)]
        parts += ['<h3 id="s2-problems">Problem classes</h3>', s2_problems(store, run, shown)]
    parts += fit_judgement_html(run.data.tags)
    parts.append("<h3>Figures</h3>")
    shown.figures = tuple(p for p in store.artifact_paths(run_id, "figures") if p.endswith(".png"))
    figs = figures_html(store, run_id) or drawn_from_history(store, run)
    parts += figs or ["<p>no figures logged with this run</p>"]
    parts += ["<h3>Model summary</h3>", model_summary_html(store, run_id)]
    return "\n".join(parts), verdict


def fit_judgement_html(tags: dict[str, str]) -> list[str]:
    text = "<p>not recorded for this run (no validation points or an older run)</p>"
    if "fit_judgement" in tags:
        text = (
            f'<p class="judgement"><strong>{esc(tags["fit_judgement"])}</strong>: '
            f"{esc(tags.get('fit_judgement_reason', ''))}</p>"
        )
    return ["<h3>Fit judgement</h3>", text]


def model_summary_html(store: Store, run_id: str) -> str:
    """The run's layer table (model_summary.csv) as an HTML table at the text's size, under
    the network line of model_summary.txt; the fixed-width text where there is no CSV."""
    summary = store.text(run_id, "model_summary.txt")
    rows = list(csv.reader(io.StringIO(store.text(run_id, "model_summary.csv") or "")))
    if len(rows) < 2 or any(len(row) != 5 for row in rows):
        if not summary:
            return "<p>not recorded for this run</p>"
        return f'<pre class="model-summary">{esc(summary)}</pre>'
    caption = summary.splitlines()[0] if summary else ""

    def number(cell: str) -> str:
        return f'<td class="num">{int(cell):,}</td>' if cell.isdigit() else f"<td>{esc(cell)}</td>"

    body = "".join(
        ('<tr class="total">' if name == "total" else "<tr>")
        + f"<td>{esc(name)}</td><td>{esc(kind)}</td><td>{esc(shape)}</td>"
        + f"{number(params)}{number(weights)}</tr>"
        for name, kind, shape, params, weights in rows[1:]
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("layer", "type", "output shape", "params", "params w/o bias")
    )
    return (
        f'<table class="model-summary"><caption>{esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def worked_section(store: Store, task: Task, runs: list[Any], shown: Shown) -> tuple[str, str]:
    """A worked example's section (S0.1, S3) and its verdict; fills `shown`."""
    run, count = latest_of_kind(runs, "worked")
    how = "the latest worked-example run"
    if shown.run is not None:
        run, how = shown.run, "chosen by hand (<code>report --run</code>)"
    shown.run = run
    if run is None:
        shown.missing = "no run yet"
        return no_run(task.command), "no run yet"
    parts = [f'<p class="choice"><strong>Shown</strong>: {how}.</p>', run_header(store, run, count)]
    verdict = "chain rule and autograd agree"
    metrics, params = run.data.metrics, run.data.params
    if task.id == "S3" and "y_pred" in metrics:
        y = metrics["y_pred"]
        ok = round(y, 2) == S3_REPORTED_OUTPUT
        verdict = (
            f'<span class="{"ok" if ok else "bad"}">output {y:.4f} &rarr; {y:.2f} '
            f"vs {S3_REPORTED_OUTPUT} reported</span>"
        )
        parts.append(
            table(
                ["quantity", "this run", "seed task"],
                [
                    ["output y_pred", f"{fmt(y)} (rounded {y:.2f})", f"{S3_REPORTED_OUTPUT}"],
                    ["y_true (ours)", esc(params.get("y_true", "-")), "not given"],
                    ["loss L", fmt(metrics.get("loss"), 6), "-"],
                ],
            )
        )
    if task.id == "S0.1":
        rows = [
            [esc(key), esc(params.get(f"init.{key}", "-")), fmt(metrics.get(f"final/{key}"), 6)]
            for key in ("W1_1", "W1_2", "b1", "W2_1", "b2")
        ]
        parts.append(
            f"<p>learning rate {esc(params.get('lr', '-'))}</p>"
            + table(["parameter", "initial", "after one epoch"], rows)
        )
    if "max_abs_diff" in metrics:
        parts.append(
            f"<p>largest |chain rule - autograd| difference: {metrics['max_abs_diff']:.1e}</p>"
        )
    text = store.text(run.info.run_id, task.worked_artifact or "")
    parts.append("<h3>Worked-example table</h3>")
    parts.append(f"<pre>{esc(text)}</pre>" if text else "<p>artifact missing</p>")
    return "\n".join(parts), verdict


def _mean_pm_std(row: dict[str, str], key: str) -> str:
    """'mean &plusmn; std' of `key` in an activation_summary.csv row; '-' for a blank cell
    (no std for one run)."""
    mean, std = (float(row[k]) if row.get(k) else None for k in (f"{key}_mean", f"{key}_std"))
    return f"{fmt(mean)} &plusmn; {fmt(std)}"


def activation_section(store: Store, task: Task, runs: list[Any]) -> tuple[str, str]:
    """The S4 activation table and figures; and a verdict line for the overview."""
    run, count = latest_of_kind(runs, S4_SUMMARY_KIND)
    if run is None:
        html_text = "<h3>Activation comparison</h3>" + no_run(
            COMPARE_ACTIVATIONS_COMMAND, "activation comparison"
        )
        return html_text, "no activation comparison yet"
    parts = ["<h3>Activation comparison</h3>", run_header(store, run, count)]
    params = run.data.params
    text = store.text(run.info.run_id, "activation_summary.csv") or ""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        seed = S4_REPORTED_ACTIVATIONS.get(row["activation"])
        rows.append(
            [
                esc(row["activation"]),
                esc(row["runs"]),
                _mean_pm_std(row, "final_train_loss"),
                _mean_pm_std(row, "final_val_acc"),
                f"{seed.train_loss:.2f}" if seed else "-",
                f"{seed.val_acc:.3f}" if seed else "-",
            ]
        )
    if rows:
        parts.append(
            f"<p>Mean &plusmn; std over seeds ({esc(params.get('seeds', '?'))} per activation; "
            f"overrides: <code>{esc(params.get('overrides', '-'))}</code>). The seed task's numbers "
            "come from 10-class colour images (likely CIFAR-10): compare rankings, not values.</p>"
        )
        parts.append(
            table(
                [
                    "activation",
                    "runs",
                    "final train loss",
                    "final val acc",
                    "seed task loss",
                    "seed task acc",
                ],
                rows,
            )
        )
    else:
        parts.append("<p>activation_summary.csv missing from this run</p>")
    parts += figures_html(store, run.info.run_id, SUMMARY_FIGURES)
    verdict = (
        f"activation table: {esc(params.get('activations', '?'))} "
        f"x {esc(params.get('seeds', '?'))} seed(s)"
    )
    return "\n".join(parts), verdict


# --------------------------------------------------------------------------------------------
# The document.

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
table.meta th { background: #fafafa; font-weight: normal; color: #555; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto;
      font-size: 0.85em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #666; font-size: 0.85em; }
section { border-top: 2px solid #444; margin-top: 2.5em; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #b42318; font-weight: bold; }
.norun { background: #fff8e1; border: 1px solid #f0c36d; padding: 0.6em; }
table.model-summary { font-size: 1rem; }
table.model-summary caption { text-align: left; font-family: ui-monospace, Menlo, Consolas,
      "DejaVu Sans Mono", monospace; padding-bottom: 0.3em; }
table.model-summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.model-summary tr.total td { font-weight: bold; border-top: 2px solid #888; }
pre.model-summary { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace;
      font-size: 1rem; }
"""


def data_line(run: Any | None) -> str:
    """Where a run's data came from and how much: a 200-image test set is not the real one."""
    if run is None:
        return ""
    tags = run.data.tags
    if "lineage.test_size" not in tags:
        return "-"
    return esc(
        f"{tags.get('lineage.source', '?')}, train {tags.get('lineage.train_size', '?')} / "
        f"test {tags['lineage.test_size']}"
    )


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def task_section(store: Store, task: Task, shown: Shown, folder: Path | None) -> tuple[str, str]:
    """One task's section body and its overview verdict; fills `shown`."""
    runs = store.finished(task.id)
    if task.worked_artifact:
        return worked_section(store, task, runs, shown)
    body, verdict = training_section(store, task, runs, references(task.id, folder), shown)
    if shown.run is not None:
        shown.evaluation = store.evaluations.get(shown.run.info.run_id)
    if task.id == "S4":
        table_html, table_verdict = activation_section(store, task, runs)
        body += "\n" + table_html
        verdict = f"{verdict}; {table_verdict}"
    return body, verdict


def answer_sheet(sheet: Sheet) -> str:
    """The table of every question id of SEED_TASKS.md: answer, command, run, second check."""
    body = []
    for q, row in answers.rows(sheet):
        run = f"<code>{esc(row.run_id)}</code>" if row.run_id else "-"
        body.append([esc(q.id), esc(q.question), row.answer, row.command, run, row.two_ways])
    return table(
        ["id", "question", "answer", "command", "run", "checked two ways"], body, "answers"
    )


def build_report(uri: str, picks: dict[str, str] | None = None, catalog: Path | None = None) -> str:
    """The whole HTML document for the store at `uri`.

    `picks`: {task: run id} chosen by hand (`--run`); ConfigError when one does not exist or
    belongs to another task. `catalog`: the folder of experiment YAML files the runs are
    compared with (default: the project's catalog).
    """
    # MLflow draws a progress bar per downloaded artifact: dozens of bars for one report.
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with tempfile.TemporaryDirectory(prefix="report-") as tmp, _environ(quiet):
        store = Store(uri, Path(tmp))
        picked = picked_runs(store.client, picks or {})
        sections, overview, shown = [], [], {}
        for task in TASKS:
            shown[task.id] = Shown(task.id, picked.get(task.id), task.command.split(";")[0])
            body, verdict = task_section(store, task, shown[task.id], catalog)
            run = shown[task.id].run
            sections.append(
                f'<section id="{anchor(task.id)}"><h2>{esc(task.id)}: {esc(task.title)}</h2>'
                f"<p><em>Seed task bar:</em> {bar_html(task)}</p>{body}</section>"
            )
            overview.append(
                [
                    f'<a href="#{anchor(task.id)}">{esc(task.id)}</a>',
                    esc(task.title),
                    f"<code>{esc(run.info.run_id[:12])}</code>"
                    if run
                    else f"<strong>{esc(shown[task.id].missing)}</strong>",
                    data_line(run),
                    verdict,
                ]
            )
        s4_runs = store.finished("S4")
        sheet = Sheet(shown, latest_of_kind(s4_runs, S4_SUMMARY_KIND)[0], store.s3_study())
        answers_html = answer_sheet(sheet)
    return document(uri, answers_html, overview, sections)


def bar_html(task: Task) -> str:
    if task.acc_bar is None:
        return esc(task.bar_text)
    return f"test accuracy &ge; {task.acc_bar:.2f}"


def document(uri: str, answers_html: str, overview: list[list[str]], sections: list[str]) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Seed tasks S0-S4: report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>Seed tasks S0-S4: report</h1>"
        f"<p>Store <code>{esc(uri)}</code>, generated {esc(generated)}.</p>"
        '<h2 id="answers">Answer sheet</h2>'
        "<p>One row per question id of <code>experiments/SEED_TASKS.md</code>: the answer or "
        "the section that holds it, the command and the run it came from, and whether it was "
        "checked a second way (chain rule against autograd, an <code>evaluate</code> run "
        "re-scoring the model, confusion counts against the per-class metrics).</p>"
        + answers_html
        + '<h2 id="tasks">Tasks</h2>'
        "<p>For each training task: the latest FINISHED run whose config equals the catalog "
        "experiment's apart from the seed, the data folder, the thread count and display "
        "settings (study trials, evaluation and summary runs are never chosen; "
        "<code>report --run TASK=RUN_ID</code> chooses by hand); for S0.1 and S3 the latest "
        "worked-example run.</p>"
        + table(["task", "what", "run shown", "data", "result vs the seed task"], overview, "tasks")
        + "\n".join(sections)
        + "</body></html>\n"
    )


def main(argv: Sequence[str]) -> int:
    from experiments.tracking import store as tracking_store

    parser = argparse.ArgumentParser(
        prog="python -m experiments report",
        description="Write one self-contained HTML report of every seed task from the store.",
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"HTML file ({DEFAULT_OUTPUT})")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: embedded store)")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="TASK=RUN_ID",
        help="show this run for the task instead of the one chosen (repeatable)",
    )
    args = parser.parse_args(list(argv))
    uri = tracking_store.resolve_tracking_uri(args.tracking_uri)
    db = tracking_store.sqlite_path(uri)
    if db is not None and not db.exists():
        print(
            f"error: no MLflow store at {db} (tracking URI {uri}); run an experiment first",
            file=sys.stderr,
        )
        return 2
    try:
        html_text = build_report(uri, parse_picks(args.run))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html_text, encoding="utf-8")
    print(f"Report written to {output.resolve()} ({output.stat().st_size / 1024:.0f} KiB)")
    return 0
