"""The HTML report, generated from a real store holding a few short runs, read back by a parser."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.reports.report import main as report
from experiments.reports.worked import main as worked
from experiments.seed_tasks import (
    S2_REPORTED_CLASS_ACC,
    S3_REPORTED_OUTPUT,
    S4_REPORTED_ACTIVATIONS,
    S4_SUMMARY_KIND,
    SEED_TASKS,
    meets_bar,
)
from experiments.training.config import parse
from experiments.training.runner import run_experiment
from tests.helpers import data_overrides

TASK_IDS = tuple(SEED_TASKS)  # every seed task, in the specification's order
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(migrated_store):
    """Every test here starts from an already migrated store (see conftest)."""
    return migrated_store


class ReportParser(HTMLParser):
    """Sections by id with their text, headings, tables and embedded images."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.heading: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.images: list[tuple[str | None, bytes]] = []
        self.overview_rows: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = {"text": [], "h2": "", "images": [], "rows": []}
        elif tag == "h2":
            self.heading = ""
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "img":
            src = attrs.get("src", "")
            prefix = "data:image/png;base64,"
            assert src.startswith(prefix), src[:40]
            data = base64.b64decode(src[len(prefix) :], validate=True)
            self.images.append((self.current, data))
            if self.current:
                self.sections[self.current]["images"].append(data)

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        elif tag == "h2" and self.current:
            self.sections[self.current]["h2"] = self.heading or ""
            self.heading = None
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.current:
                self.sections[self.current]["rows"].append(self.row)
            else:
                self.overview_rows.append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.heading is not None:
            self.heading += data
        if self.cell is not None:
            self.cell.append(data)
        if self.current:
            self.sections[self.current]["text"].append(data)


def _parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _section(parser: ReportParser, task: str) -> tuple[dict, str]:
    section = parser.sections[f"task-{task.replace('.', '-')}"]
    return section, " ".join(" ".join(section["text"]).split())


def test_report_on_a_store_with_a_few_short_runs(store, fashion_dir, cifar_dir, tmp_path, capsys):
    mlp = run_experiment(
        parse("s1-mlp", [*data_overrides("s1-mlp", fashion_dir, cifar_dir)]), store
    )
    cnn_overrides = [
        *data_overrides("s2-cnn", fashion_dir, cifar_dir),
        "--model.channels",
        "[8, 16, 16]",
    ]
    cnn = run_experiment(parse("s2-cnn", cnn_overrides), store)
    assert worked(["s3", "--tracking-uri", store]) == 0
    capsys.readouterr()

    output = tmp_path / "out" / "report.html"
    assert report(["--output", str(output), "--tracking-uri", store]) == 0
    assert f"Report written to {output.resolve()}" in capsys.readouterr().out
    parser = _parse(output)

    # Every seed task: in the overview and as its own section, headed by its id.
    assert [row[0] for row in parser.overview_rows[1:]] == list(TASK_IDS)
    for task in TASK_IDS:
        section, text = _section(parser, task)
        assert section["h2"].startswith(f"{task}: "), section["h2"]
        has_run = task in ("S1.2", "S2", "S3")
        assert ("no run yet" in text) is not has_run, task
    commands = {
        "S0.1": "python -m experiments worked s0.1",
        "S0.2": "python -m experiments run s0-mlp",
        "S0.3": "python -m experiments run s0-cnn",
        "S1.1": "python -m experiments run s1-scratch",
        "S1.3": "python -m experiments run s1-cnn",
        "S4": "python -m experiments compare-activations",
    }
    for task, command in commands.items():
        assert command in _section(parser, task)[1], task
    overview = {row[0]: row for row in parser.overview_rows[1:]}
    assert overview["S1.3"][2] == "no run yet"
    assert overview["S1.2"][2] == mlp.run_id[:12]

    # S1.2: headline metrics beside the bar, its figures, judgement and model summary.
    section, text = _section(parser, "S1.2")
    acc = mlp.test_metrics["test/acc"]
    metric_rows = {row[0]: row for row in section["rows"] if row and row[0].startswith("test/")}
    assert set(metric_rows) == {"test/acc", "test/precision", "test/recall", "test/f1"}
    bar = SEED_TASKS["S1.2"].acc_bar
    assert metric_rows["test/acc"][1:] == [f"{acc:.4f}", f"≥ {bar:.2f}"]
    assert overview["S1.2"][3] == "explicit, train 500 / test 200"  # tiny data, and it says so
    verdict = "meets the bar" if meets_bar("S1.2", acc) else "below the bar"
    assert f"{verdict} ({acc:.4f} vs ≥ {bar:.2f})" in overview["S1.2"][4]
    assert len(section["images"]) >= 1
    # Every training run logs its fit judgement and model summary: both must be shown.
    tags = MlflowClient(store).get_run(mlp.run_id).data.tags
    assert tags["fit_judgement"] and tags["fit_judgement"] in text
    assert tags["fit_judgement_reason"] in text
    artifacts = [f.path for f in MlflowClient(store).list_artifacts(mlp.run_id)]
    assert "model_summary.txt" in artifacts
    summary = MlflowClient(store).download_artifacts(mlp.run_id, "model_summary.txt")
    assert Path(summary).read_text().splitlines()[0] in text

    # S2: per-class accuracy of this run next to the seed's reported numbers.
    section, _ = _section(parser, "S2")
    per_class = {row[0]: row for row in section["rows"] if len(row) == 4}
    shirt = MlflowClient(store).get_run(cnn.run_id).data.metrics["test/class_acc/Shirt"]
    assert per_class["Shirt"][1:3] == [f"{shirt:.3f}", f"{S2_REPORTED_CLASS_ACC['Shirt']:.2f}"]
    assert {name: row[2] for name, row in per_class.items() if name != "class"} == {
        name: f"{reported:.2f}" for name, reported in S2_REPORTED_CLASS_ACC.items()
    }
    assert per_class["Bag"][2] == "1.00" and per_class["Coat"][2] == "0.78"  # as the spec has them

    # S3: the worked example's output and gradient table.
    section, text = _section(parser, "S3")
    output_row = next(row for row in section["rows"] if row and row[0] == "output y_pred")
    assert output_row[2] == f"{S3_REPORTED_OUTPUT}"
    assert f"vs {S3_REPORTED_OUTPUT} reported" in overview["S3"][4]
    assert "dL/dw1[1][2]" in text and "agree" in text

    # Embedded figures are real PNG images.
    assert parser.images and all(data.startswith(PNG_SIGNATURE) for _, data in parser.images)


def test_report_of_an_empty_store_says_no_run_yet_everywhere(store, tmp_path, capsys):
    output = tmp_path / "empty.html"
    assert report(["--output", str(output), "--tracking-uri", store]) == 0
    parser = _parse(output)
    for task in TASK_IDS:
        assert "no run yet" in _section(parser, task)[1], task
    assert parser.images == []


def test_report_refuses_a_missing_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/nowhere/mlflow.db"
    output = tmp_path / "r.html"
    assert report(["--output", str(output), "--tracking-uri", uri]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not output.exists() and not (tmp_path / "nowhere").exists()


def test_report_draws_curves_for_a_run_that_logged_no_figures(store, tmp_path):
    # An S1.1 run recorded before per-run figures existed: metrics only, no artifacts.
    from mlflow.entities import Metric

    client = MlflowClient(store)
    experiment_id = client.create_experiment("fashion-mnist")
    run = client.create_run(experiment_id, tags={"task": "S1.1", "experiment": "s1-scratch"})
    run_id = run.info.run_id
    now = run.info.start_time
    points = []
    for epoch, (loss, acc) in enumerate([(1.2, 0.60), (0.8, 0.72), (0.6, 0.79)]):
        step = 10 * (epoch + 1) - 1  # Lightning's step at the end of each 10-batch epoch
        for key, value in (
            ("train/loss", loss),
            ("val/loss", loss + 0.05),
            ("train/acc", acc),
            ("val/acc", acc - 0.01),
            ("epoch", float(epoch)),
        ):
            points.append(Metric(key, value, now, step))
    points.append(Metric("test/acc", 0.781, now, 30))
    client.log_batch(run_id, metrics=points)
    client.set_terminated(run_id, "FINISHED")

    output = tmp_path / "r.html"
    assert report(["--output", str(output), "--tracking-uri", store]) == 0
    parser = _parse(output)
    section, text = _section(parser, "S1.1")
    assert "drawn by the report from the metric history" in text
    assert len(section["images"]) == 1 and section["images"][0].startswith(PNG_SIGNATURE)
    assert meets_bar("S1.1", 0.781)
    assert f"meets the bar (0.7810 vs ≥ {SEED_TASKS['S1.1'].acc_bar:.2f})" in " ".join(
        " ".join(row) for row in parser.overview_rows
    )
    assert "not recorded for this run" in text  # no fit judgement, no model summary


def test_activation_table_of_a_single_seed_shows_no_std(store, tmp_path):
    # A summary run as compare-activations --seeds 1 writes it: the std cells are blank.
    from experiments.reports.compare_activations import ChildRun, summarize, summary_csv

    child = ChildRun("relu", 0, "r0", 1.25, 0.5, 0.49, [(10, 1.25)], [(10, 0.5)])
    client = MlflowClient(store)
    experiment_id = client.create_experiment("fashion-mnist")
    tags = {"task": "S4", "kind": S4_SUMMARY_KIND}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_text(run_id, summary_csv(summarize([child], ["relu"])), "activation_summary.csv")
    client.set_terminated(run_id, "FINISHED")

    output = tmp_path / "r.html"
    assert report(["--output", str(output), "--tracking-uri", store]) == 0
    section, _ = _section(_parse(output), "S4")
    relu = next(row for row in section["rows"] if row and row[0] == "relu")
    seed = S4_REPORTED_ACTIVATIONS["relu"]
    assert relu[1:] == [
        "1",
        "1.2500 ± -",
        "0.5000 ± -",
        f"{seed.train_loss:.2f}",
        f"{seed.val_acc:.3f}",
    ]
