"""The HTML report, generated from a real store holding a few short runs, read back by a parser."""

from __future__ import annotations

import base64
import re
import shutil
import statistics
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from datamodules.cifar100 import how_to_supply
from datamodules.fashion_mnist import FASHION_MNIST_CLASSES
from experiments.reports.answers import ANSWERS
from experiments.reports.choice import IGNORED_KEYS, differences, logged_form, references
from experiments.reports.confusions import problem_classes
from experiments.reports.report import build_report
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
from experiments.tracking.artifacts import CONFUSION_CSV, read_confusion_csv
from experiments.training.config import CONFIGS_DIR, parse
from experiments.training.outputs import RunOutputs
from experiments.training.runner import run_experiment
from tests.helpers import REPO

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
        self.table: str = ""
        #: rows of the tables outside the sections, by the table's class
        self.tables: dict[str, list[list[str]]] = {}
        self.row_html: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = {"text": [], "h2": "", "images": [], "rows": []}
        elif tag == "h2":
            self.heading = ""
        elif tag == "table" and not self.current:
            self.table = attrs.get("class", "")
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
                self.tables.setdefault(self.table, []).append(self.row)
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


def _overview(parser: ReportParser) -> dict[str, list[str]]:
    """The task table's rows by task id."""
    return {row[0]: row for row in parser.tables["tasks"][1:]}


def _section(parser: ReportParser, task: str) -> tuple[dict, str]:
    section = parser.sections[f"task-{task.replace('.', '-')}"]
    return section, " ".join(" ".join(section["text"]).split())


# ---------------------------------------------------------------------------------------------
# One store shared by the tests below (session scope; each test works on a copy of its
# database): a tiny catalog-like S1.1 experiment run twice at its full (catalog) length and
# once shortened, an S2 run, an evaluation and two worked examples.


def _tiny_yaml(folder: Path, name: str, source: str, changes: dict) -> Path:
    """A catalog YAML made small: `changes` maps dotted keys of the YAML to new values."""
    raw = yaml.safe_load((CONFIGS_DIR / f"{source}.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory):
    """A catalog of two tiny experiments: S1.1 (2 epochs) and S2 (1 epoch, small CNN)."""
    folder = tmp_path_factory.mktemp("tiny-catalog")
    small = {"data.init_args.val_size": 100}
    _tiny_yaml(folder, "tiny-s1-scratch", "s1-scratch", {**small, "trainer.max_epochs": 2})
    _tiny_yaml(
        folder,
        "tiny-s2-cnn",
        "s2-cnn",
        {
            **small,
            "trainer.max_epochs": 1,
            "model.init_args.net.init_args.channels": [8, 16],
            "model.init_args.net.init_args.hidden": 32,
        },
    )
    return folder


@dataclass
class SharedRuns:
    db: Path
    full: str  # tiny-s1-scratch, its catalog length, seed 0
    full_seed1: str  # the same, seed 1 (the newest full run)
    short: str  # tiny-s1-scratch --trainer.max_epochs 1 (the newest S1.1 run)
    s2: str
    evaluation: str  # `evaluate` of the S2 run
    s2_test_size: int


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory, empty_store_db, tiny_catalog, fashion_dir):
    from experiments.inference.evaluate import evaluate
    from experiments.inference.reference import resolve

    root = tmp_path_factory.mktemp("report-store")
    db = root / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store_db, db)
    uri = f"sqlite:///{db}"
    # The ignored keys only: where the data is, whether to download, the progress bar.
    data = [
        "--data.data_dir",
        str(fashion_dir),
        "--data.download",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    s1 = str(tiny_catalog / "tiny-s1-scratch.yaml")
    quick = RunOutputs(log_model=False, system_metrics_s=None)
    full = run_experiment(parse(s1, data), uri, outputs=quick, verbose=False)
    full_seed1 = run_experiment(
        parse(s1, [*data, "--seed", "1"]), uri, outputs=quick, verbose=False
    )
    short = run_experiment(
        parse(s1, [*data, "--trainer.max_epochs", "1"]), uri, outputs=quick, verbose=False
    )
    s2_outputs = RunOutputs(system_metrics_s=None)  # its logged model is evaluated below
    s2 = run_experiment(
        parse(str(tiny_catalog / "tiny-s2-cnn.yaml"), data), uri, outputs=s2_outputs, verbose=False
    )
    evaluation, _ = evaluate(resolve(s2.run_id, uri), uri)
    assert worked(["s3", "--tracking-uri", uri]) == 0
    assert worked(["s0.1", "--tracking-uri", uri]) == 0
    size = int(MlflowClient(uri).get_run(s2.run_id).data.tags["lineage.test_size"])
    return SharedRuns(db, full.run_id, full_seed1.run_id, short.run_id, s2.run_id, evaluation, size)


@pytest.fixture
def shared(shared_runs, tmp_path, monkeypatch):
    """A copy of the shared store's database (the artifacts stay where the runs put them)."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(shared_runs.db, db)
    return f"sqlite:///{db}", shared_runs


def _build(uri: str, tmp_path: Path, catalog: Path | None, picks=None) -> ReportParser:
    output = tmp_path / "report.html"
    output.write_text(build_report(uri, picks, catalog), encoding="utf-8")
    return _parse(output)


def test_the_full_run_is_shown_not_the_newer_shortened_one(shared, tiny_catalog, tmp_path):
    uri, runs = shared
    parser = _build(uri, tmp_path, tiny_catalog)
    overview = _overview(parser)
    assert [row[0] for row in parser.tables["tasks"][1:]] == list(TASK_IDS)
    # The newest run of the catalog's settings (seed 1), not the newer 1-epoch run.
    assert overview["S1.1"][2] == runs.full_seed1[:12]
    section, text = _section(parser, "S1.1")
    assert runs.full_seed1 in text and runs.short not in text
    chosen = "Chosen: the latest FINISHED run whose config equals the catalog's tiny-s1-scratch"
    assert _has(text, chosen)
    assert _has(text, "2 such runs. 1 run with other settings not shown (report --run S1.1=RUN_ID")
    # Both seeds: count, mean and sample std of the headline metrics beside the shown run's.
    client = MlflowClient(uri)
    accs = [client.get_run(r).data.metrics["test/acc"] for r in (runs.full, runs.full_seed1)]
    header = next(row for row in section["rows"] if row and row[0] == "metric")
    assert header[2] == "mean ± std of the 2 runs with the catalog's settings"
    acc_row = next(row for row in section["rows"] if row and row[0] == "test/acc")
    mean, std = statistics.fmean(accs), statistics.stdev(accs)
    assert acc_row[1:] == [f"{accs[1]:.4f}", f"{mean:.4f} ± {std:.4f}", "≥ 0.77"]
    verdict = "meets the bar" if meets_bar("S1.1", accs[1]) else "below the bar"
    assert f"{verdict} ({accs[1]:.4f} vs ≥ 0.77)" in overview["S1.1"][4]
    # What every run records is shown: its judgement, figures, model summary.
    tags = client.get_run(runs.full_seed1).data.tags
    assert tags["fit_judgement"] in text and tags["fit_judgement_reason"] in text
    assert section["images"] and all(d.startswith(PNG_SIGNATURE) for d in section["images"])
    summary = client.download_artifacts(runs.full_seed1, "model_summary.txt", str(tmp_path))
    assert Path(summary).read_text().splitlines()[0] in text
    # Tasks without a run say so; the worked examples are shown.
    assert overview["S1.3"][2] == "no run yet"
    output_row = next(row for row in _section(parser, "S3")[0]["rows"] if row[0] == "output y_pred")
    assert output_row[2] == f"{S3_REPORTED_OUTPUT}"


def test_report_run_chooses_by_hand(shared, tiny_catalog, tmp_path, capsys):
    uri, runs = shared
    parser = _build(uri, tmp_path, tiny_catalog, {"S1.1": runs.short})
    _, text = _section(parser, "S1.1")
    assert runs.short in text and runs.full_seed1 not in text
    by_hand = "Chosen by hand (report --run); this run differs from the catalog's tiny-s1-scratch"
    assert _has(text, by_hand) and _has(text, "trainer.max_epochs 1 (catalog: 2)")
    assert _overview(parser)["S1.1"][4].startswith("chosen by hand: ")
    # The command line: against the project's catalog, the same run is shown by hand.
    output = tmp_path / "cli.html"
    args = ["--output", str(output), "--tracking-uri", uri, "--run", f"S1.1={runs.short}"]
    assert report(args) == 0
    _, text = _section(_parse(output), "S1.1")
    assert runs.short in text and _has(text, "trainer.max_epochs 1 (catalog: 20)")


@pytest.mark.parametrize(
    ("pick", "message"),
    [
        ("S1.1=0123456789abcdef0123456789abcdef", "no run '0123456789abcdef0123456789abcdef'"),
        ("S1.2={short}", "belongs to task S1.1, not S1.2; use --run S1.1={short}"),
        ("S9={short}", "'S9' is not a seed task"),
        ("S1.1", "expected TASK=RUN_ID"),
    ],
)
def test_report_run_refuses_a_run_it_cannot_show(shared, tmp_path, capsys, pick, message):
    uri, runs = shared
    output = tmp_path / "r.html"
    args = ["--output", str(output), "--tracking-uri", uri, "--run", pick.format(short=runs.short)]
    assert report(args) == 2
    assert message.format(short=runs.short) in capsys.readouterr().err
    assert not output.exists()


def test_a_task_with_only_a_shortened_run_says_so(shared, tiny_catalog, tmp_path):
    uri, runs = shared
    client = MlflowClient(uri)
    client.delete_run(runs.full)
    client.delete_run(runs.full_seed1)
    parser = _build(uri, tmp_path, tiny_catalog)
    section, text = _section(parser, "S1.1")
    line = "1 run with other settings, none with the catalog's"
    assert _has(text, line) and _overview(parser)["S1.1"][2] == line
    assert _has(text, "trainer.max_epochs 1 (catalog: 2)") and runs.short in text
    assert "below the bar" not in text and "meets the bar" not in text
    assert "bar" not in _overview(parser)["S1.1"][4]
    assert section["images"] == []  # nothing of the shortened run is shown as the answer


def _has(text: str, phrase: str) -> bool:
    """`phrase` in `text`, whitespace aside (text nodes of inline tags are joined by spaces)."""
    return re.sub(r"\s", "", phrase) in re.sub(r"\s", "", text)


def _spec_ids() -> list[str]:
    """The question ids of experiments/SEED_TASKS.md, read here independently of the report."""
    text = (REPO / "experiments" / "SEED_TASKS.md").read_text()
    return re.findall(r"^\| (S\d\S*) \|", text, re.M)


def test_answer_sheet_has_every_question_id_and_real_run_ids(shared, tiny_catalog, tmp_path):
    uri, runs = shared
    parser = _build(uri, tmp_path, tiny_catalog)
    header, *rows = parser.tables["answers"]
    assert header == ["id", "question", "answer", "command", "run", "checked two ways"]
    assert [row[0] for row in rows] == _spec_ids() and len(rows) == 45
    assert set(ANSWERS) == set(_spec_ids())  # every id has its own answer, none generic
    shown = [row[4] for row in rows if row[4] != "-"]
    client = MlflowClient(uri)
    assert {client.get_run(run_id).info.run_id for run_id in shown} == set(shown)
    by_id = {row[0]: row for row in rows}
    assert by_id["S1-P1"][4] == runs.full_seed1
    assert by_id["S2-P"][4] == runs.s2
    assert by_id["S2-P"][5] == (
        "yes: per-class accuracy from the confusion counts equals the logged test/class_acc; "
        f"yes: evaluation run {runs.evaluation} re-scored the model, same test/acc"
    )
    assert (
        by_id["S1-P1"][5]
        == f"no (to re-score the model: python -m experiments evaluate {runs.full_seed1})"
    )
    assert by_id["S0-Q1.2"][5].startswith("yes: chain rule and autograd agree")
    assert (
        by_id["S3-Q1.1"][5]
        == f"yes: rounds to {S3_REPORTED_OUTPUT}, the seed task reports {S3_REPORTED_OUTPUT}"
    )
    assert by_id["S1-Q1.1"][2].startswith("not answered yet: ")
    assert by_id["S3-Q4.2"][2].startswith("prose, not computed: ")
    assert by_id["S0-Q2.1"][2].startswith("no run yet")
    assert by_id["S0-Q2.1"][3] == "python -m experiments run s0-mlp"


def test_confusion_counts_are_logged_and_name_the_problem_classes(shared, tiny_catalog, tmp_path):
    uri, runs = shared
    client = MlflowClient(uri)
    for run_id in (runs.s2, runs.evaluation):  # a run and an evaluation log the counts
        local = client.download_artifacts(run_id, CONFUSION_CSV, str(tmp_path / run_id))
        names, counts = read_confusion_csv(Path(local).read_text())
        assert names == list(FASHION_MNIST_CLASSES)
        assert sum(map(sum, counts)) == runs.s2_test_size
        logged = client.get_run(runs.s2).data.metrics
        for name, row, i in zip(names, counts, range(len(names)), strict=True):
            assert logged[f"test/class_acc/{name}"] == pytest.approx(row[i] / sum(row))
    local = client.download_artifacts(runs.s2, CONFUSION_CSV, str(tmp_path / "again"))
    names, counts = read_confusion_csv(Path(local).read_text())
    expected = [str(p) for p in problem_classes(names, counts)]
    assert expected  # some class is below the overall accuracy on this data
    parser = _build(uri, tmp_path, tiny_catalog)
    section, text = _section(parser, "S2")
    assert "Problem classes" in text
    # Per-class accuracy of the run beside the seed task's reported numbers.
    per_class = {row[0]: row for row in section["rows"] if len(row) == 4 and row[0] != "class"}
    shirt = client.get_run(runs.s2).data.metrics["test/class_acc/Shirt"]
    assert per_class["Shirt"][1:3] == [f"{shirt:.3f}", f"{S2_REPORTED_CLASS_ACC['Shirt']:.2f}"]
    assert {name: row[2] for name, row in per_class.items()} == {
        name: f"{reported:.2f}" for name, reported in S2_REPORTED_CLASS_ACC.items()
    }
    for line in expected:
        assert _has(text, line)
    answer = next(row for row in parser.tables["answers"] if row[0] == "S2-P")[2]
    assert expected[0] in answer


def test_problem_classes_read_like_the_seed_task():
    names = list(FASHION_MNIST_CLASSES)
    counts = [[1000 if i == j else 0 for j in range(10)] for i in range(10)]
    shirt, tshirt, pullover, coat, bag = (
        names.index(n) for n in ("Shirt", "T-shirt/top", "Pullover", "Coat", "Bag")
    )
    counts[shirt] = [0] * 10
    counts[shirt][shirt], counts[shirt][tshirt], counts[shirt][pullover] = 728, 112, 63
    counts[shirt][coat], counts[shirt][bag] = 60, 37
    counts[coat] = [0] * 10
    counts[coat][coat], counts[coat][pullover] = 900, 100
    problems = [str(p) for p in problem_classes(names, counts)]
    assert problems == [
        "Shirt 72.8%: 112 to T-shirt/top, 63 to Pullover",
        "Coat 90.0%: 100 to Pullover",
    ]


def test_runs_are_compared_with_the_catalog_apart_from_the_ignored_keys():
    (ref,) = references("S1.2")
    ignored = [
        "--seed",
        "4",
        "--threads",
        "2",
        "--data.data_dir",
        "/elsewhere",
        "--data.download",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert differences(logged_form(parse("s1-mlp", ignored).params()), ref) == []
    shortened = logged_form(parse("s1-mlp", ["--trainer.max_epochs", "2"]).params())
    assert [str(d) for d in differences(shortened, ref)] == ["trainer.max_epochs 2 (catalog: 30)"]
    other = logged_form(parse("s1-mlp", ["--data.val_size", "100", "--model.lr", "0.1"]).params())
    assert [d.key for d in differences(other, ref)] == ["data.val_size", "model.lr"]


def test_report_of_an_empty_store_says_no_run_yet_everywhere(store, tmp_path, capsys):
    output = tmp_path / "empty.html"
    assert report(["--output", str(output), "--tracking-uri", store]) == 0
    parser = _parse(output)
    for task in TASK_IDS:
        assert "no run yet" in _section(parser, task)[1], task
    assert parser.images == []
    # S0 runs on CIFAR-100: its boxes say what the data needs, in the run's own words.
    for task in ("S0.2", "S0.3"):
        text = re.sub(r"\s", "", _section(parser, task)[1])  # text nodes, spaces aside
        for line in how_to_supply(True):
            assert re.sub(r"[\s`]", "", line) in text, (task, line)
    assert "CIFAR-100" not in _section(parser, "S1.2")[1]


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
    # Logged without a config, it has other settings than the catalog's: shown by hand.
    args = ["--output", str(output), "--tracking-uri", store, "--run", f"S1.1={run_id}"]
    assert report(args) == 0
    parser = _parse(output)
    section, text = _section(parser, "S1.1")
    assert "drawn by the report from the metric history" in text
    assert len(section["images"]) == 1 and section["images"][0].startswith(PNG_SIGNATURE)
    assert meets_bar("S1.1", 0.781)
    bar = SEED_TASKS["S1.1"].acc_bar
    assert _overview(parser)["S1.1"][4] == f"chosen by hand: meets the bar (0.7810 vs ≥ {bar:.2f})"
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


def test_the_docs_name_every_key_the_run_choice_ignores():
    """The report page's table of ignored keys is the code's list, neither more nor less."""
    page = (REPO / "experiments" / "docs" / "tracking.md").read_text()
    section = page[page.index("## Report") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
    rows = re.findall(r"^\| (`.+?`) \|", section, re.M)
    documented = {key for row in rows for key in re.findall(r"`([^`]+)`", row)}
    assert documented == set(IGNORED_KEYS)
    spec = (REPO / "experiments" / "SEED_TASKS.md").read_text()
    assert "answer sheet" in spec and "--run S1.2=RUN_ID" in spec
