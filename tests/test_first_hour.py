"""The first hour of a new user: what the commands say and draw when they meet them first.

    python -m pytest tests/test_first_hour.py

- S0 without CIFAR-100: the error says what was tried and what to do, and leaves no folder.
- The training progress bar at 80 columns: the loss and val/acc, and a bar that can be read.
- `--help` keeps its example commands one per line; `run` alone says what is missing.
- The per-class accuracy figure: no value label under the overall line or the legend; the
  report's model summary as a table at the text's size.

Network: the download tests point urllib's proxy variables at a local port that refuses
connections (or accepts and never answers), so the real torchvision download fails at once
on any machine, with or without internet access.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamodules import CIFAR100SuperclassDataModule, DataNotFoundError
from datamodules.fashion_mnist import FASHION_MNIST_CLASSES
from tests.helpers import REPO, data_overrides, run_cli, run_main

# --- S0 without CIFAR-100 -------------------------------------------------------------------


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A local TCP port that refuses connections while held (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A local TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def proxy_env(port: int) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{port}"
    return {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy}


@pytest.fixture
def use_proxy(monkeypatch):
    """Point this process's urllib at a proxy port; urllib's global opener reads the
    variables once, so it is dropped before and after (`install_opener(None)`)."""
    import urllib.request

    def use(port: int) -> None:
        for key, value in proxy_env(port).items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        urllib.request.install_opener(None)

    yield use
    urllib.request.install_opener(None)


def test_s0_without_cifar_says_what_was_tried_and_leaves_no_folder(
    tmp_path, monkeypatch, use_proxy, capsys
):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    with refusing_port() as port:
        use_proxy(port)
        code, _, message = run_main("run", "s0-mlp", capsys=capsys)
    assert code == 2, message
    assert "CIFAR-100 not found. Tried:" in message
    folder = work / "data" / "cifar-100-python"
    assert f"data/cifar-100-python (= {folder}): no such directory" in message
    assert "torchvision download of https://www.cs.toronto.edu/" in message
    assert "failed (" in message and "nothing was kept" in message
    assert "`--data.data_dir PATH`" in message and "cifar-100-python/" in message
    assert "where www.cs.toronto.edu is reachable" in message
    assert "enable `--data.download true`" not in message  # it was on, and was just tried
    assert "Traceback" not in message
    assert not (work / "data").exists()
    assert list(work.iterdir()) == []  # no store, no folder of any kind


def test_failed_download_removes_only_what_it_created(tmp_path, use_proxy):
    existing = tmp_path / "existing"
    (existing / "keep").mkdir(parents=True)
    target = existing / "new" / "deeper"
    dm = CIFAR100SuperclassDataModule(data_dir=str(target), download=True, val_size=5)
    with refusing_port() as port:
        use_proxy(port)
        with pytest.raises(DataNotFoundError) as info:
            dm.prepare_data()
    assert "failed (" in str(info.value)
    assert not (existing / "new").exists()  # created for the download, removed again
    assert sorted(p.name for p in existing.iterdir()) == ["keep"]  # the rest untouched


def test_a_download_host_that_never_answers_is_bounded(tmp_path, monkeypatch, use_proxy):
    import datamodules.cifar100 as cifar100

    monkeypatch.setattr(cifar100, "DOWNLOAD_TIMEOUT", 1.0)
    dm = CIFAR100SuperclassDataModule(data_dir=str(tmp_path / "data"), download=True)
    with silent_port() as port:
        use_proxy(port)
        with pytest.raises(DataNotFoundError, match="timed out"):
            dm.prepare_data()
    assert socket.getdefaulttimeout() is None  # the process-wide default is restored
    assert not (tmp_path / "data").exists()


def test_without_download_it_says_how_to_allow_it(tmp_path):
    dm = CIFAR100SuperclassDataModule(data_dir=str(tmp_path), download=False, val_size=5)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "not attempted (--data.download false)" in message
    assert "`--data.download true`" in message and "`--data.data_dir PATH`" in message


# --- the progress bar at 80 columns ---------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(args: list[str], cwd: Path, columns: int, timeout: float = 300) -> str:
    """`python -m experiments ARGS` with its output on a pseudo-terminal `columns` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {
        "PYTHONPATH": str(REPO),
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "COLUMNS": str(columns),
        "TERM": "xterm",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise TimeoutError(f"no output for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    finally:
        proc.kill()
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_shows_loss_and_val_acc_readably_at_80_columns(
    migrated_store, tmp_path, fashion_dir
):
    overrides = data_overrides("s1-mlp", fashion_dir, None)
    overrides[overrides.index("--trainer.enable_progress_bar") + 1] = "true"
    output = run_in_terminal(["run", "s1-mlp", *overrides], tmp_path, columns=80)
    segments = [ANSI.sub("", s).rstrip() for s in re.split(r"[\r\n]", output)]
    epoch = [s for s in segments if s.startswith("Epoch 0:") and "100%" in s]
    assert epoch, output[-3000:]
    line = epoch[-1]  # the bar as it was left at the end of the epoch
    assert len(line) <= 80, line
    assert re.search(r"loss=\d\.\d{4}", line), line
    assert re.search(r"val/acc=\d\.\d+", line), line
    for hidden in ("val/f1", "val/precision", "val/recall", "val/loss", "v_num"):
        assert hidden not in line, line
    bar = line.split("|")[1]  # "Epoch 0: 100%|<bar>| 10/10 [...]"
    assert len(bar) >= 10, line
    # Nothing but the bar and the results: no library chatter, no validation bars.
    for chatter in CHATTER:
        assert chatter not in output, (chatter, output[-3000:])


#: What Lightning and MLflow print by default that a run leaves out unless -v.
CHATTER = (
    "GPU available",  # Lightning's accelerator lines
    "LitLogger",  # Lightning's tip
    "| Name",  # the model summary table
    "`Trainer.fit` stopped",
    "Restoring states",
    "INFO mlflow",  # "Creating initial MLflow database tables"
    "Validation DataLoader",
    "LeafSpec",  # a deprecation warning inside Lightning
)


def test_library_warnings_go_to_the_run_and_show_with_v(migrated_store, tmp_path, fashion_dir):
    from mlflow import MlflowClient

    overrides = data_overrides("s1-mlp", fashion_dir, None)
    quiet = run_cli("run", "s1-mlp", *overrides, cwd=tmp_path, home=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    for chatter in (*CHATTER, "logging interval"):
        assert chatter not in quiet.stdout + quiet.stderr, chatter
    # The tiny data has fewer batches than log_every_n_steps: Lightning warns, into the run.
    run_id = re.search(r"MLflow run (\w+)", quiet.stdout).group(1)
    log = MlflowClient(migrated_store).download_artifacts(run_id, "warnings.log", str(tmp_path))
    assert "smaller than the logging interval" in Path(log).read_text()
    loud = run_cli("run", "s1-mlp", *overrides, "-v", cwd=tmp_path, home=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "smaller than the logging interval" in loud.stderr
    assert "GPU available" in loud.stderr


# --- --help and `run` alone -----------------------------------------------------------------


def _help(capsys, command: str) -> str:
    from experiments.__main__ import main as cli

    try:
        code = cli([command, "--help"])
    except SystemExit as exc:  # argparse's own --help
        code = exc.code
    assert code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "module"),
    [
        ("ui", "experiments.services.ui"),
        ("server", "experiments.services.server"),
        ("run", "experiments.training.cli"),
        ("compare", "experiments.reports.compare"),
        ("doctor", "experiments.training.doctor"),
    ],
)
def test_help_keeps_each_example_command_on_its_own_line(command, module, capsys, monkeypatch):
    import importlib

    monkeypatch.setenv("COLUMNS", "80")
    examples = [
        line.strip()
        for line in importlib.import_module(module).__doc__.splitlines()
        if line.strip().startswith("python -m experiments")
    ]
    assert len(examples) >= 1
    lines = [line.strip() for line in _help(capsys, command).splitlines()]
    for example in examples:
        assert example in lines, (example, lines)


def test_run_alone_exits_2_saying_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main("run", capsys=capsys)
    assert code == 2
    assert out == ""
    assert "usage: python -m experiments run" in err
    error = err.strip().splitlines()[-1]
    assert error.startswith("error: no experiment given")
    for needed in ("`python -m experiments list`", "--config FILE", "--resume RUN_ID"):
        assert needed in error, error
    assert list(tmp_path.iterdir()) == []


# --- the figure and the report --------------------------------------------------------------

FASHION = list(FASHION_MNIST_CLASSES)
CASES = {
    # The line at 0.878 ran through the label of T-shirt/top (0.85) before.
    "s2-like": ([0.85, 0.97, 0.80, 0.88, 0.82, 0.96, 0.62, 0.95, 0.97, 0.96], FASHION, 0.878),
    "s0-like": ([0.5, 0.62, 0.41, 0.78, 0.7], ["bridge", "castle", "house", "road", "sky"], None),
    "near-zero": ([0.02, 0.0, 0.05, 1.0, 0.03], ["a", "b", "c", "d", "e"], 0.03),
    "all-equal": ([0.9] * 4, ["a", "b", "c", "d"], 0.9),
}


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("case", list(CASES))
def test_per_class_values_clear_the_overall_line_and_its_legend(case, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from experiments.tracking.figures import per_class_accuracy_figure

    acc, names, overall = CASES[case]
    fig = per_class_accuracy_figure(acc, names, "per-class accuracy", overall=overall)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    values = [t for t in ax.texts if t.get_visible()]
    assert [t.get_text() for t in values] == [f"{a:.2f}" for a in acc]
    boxes = [t.get_window_extent(renderer) for t in values]
    legend = ax.get_legend()
    legend_texts = [t.get_window_extent(renderer) for t in legend.get_texts()]
    assert any("accuracy" in t.get_text() for t in legend.get_texts())  # the line's label
    title = ax.title.get_window_extent(renderer)
    line_y = ax.transData.transform((0.0, ax.lines[0].get_ydata()[0]))[1]
    for box, text in zip(boxes, values, strict=True):
        assert not (box.y0 - 1 <= line_y <= box.y1 + 1), f"the line runs through {text}"
        assert not any(_overlap(box, other) for other in legend_texts), text
        assert not _overlap(box, title), text
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    assert not any(_overlap(title, other) for other in legend_texts)
    whole = legend.get_window_extent(renderer)
    assert fig.bbox.x0 <= whole.x0 and whole.x1 <= fig.bbox.x1, "legend cut off"
    for i, a in enumerate(boxes):
        assert not any(_overlap(a, b) for b in boxes[i + 1 :])
    fig.savefig(tmp_path / f"{case}.png")  # and it still saves


def test_report_shows_the_model_summary_as_a_table(migrated_store, tmp_path):
    from experiments.reports.report import CSS, Store, model_summary_html
    from experiments.tracking import store as tracking_store
    from experiments.tracking.model_summary import format_summary, summarize, write_csv
    from models.components import LeNet

    rows = summarize(LeNet(), (3, 32, 32))
    folder = tmp_path / "summary"
    folder.mkdir()
    (folder / "model_summary.txt").write_text("LeNet on input 3x32x32\n" + format_summary(rows))
    write_csv(rows, folder / "model_summary.csv")
    client = tracking_store.client(migrated_store)
    experiment = tracking_store.ensure_experiment(client, migrated_store, "summary-test")
    run_id = client.create_run(experiment).info.run_id
    client.log_artifacts(run_id, str(folder))

    (tmp_path / "downloads").mkdir()
    html = model_summary_html(Store(migrated_store, tmp_path / "downloads"), run_id)
    assert html.startswith('<table class="model-summary"><caption>LeNet on input 3x32x32')
    assert "<pre" not in html
    total = sum(r.params for r in rows)
    assert f'<tr class="total"><td>total</td><td></td><td></td><td class="num">{total:,}' in html
    assert html.count("<tr") == len(rows) + 2  # header, one per layer, totals
    assert "table.model-summary { font-size: 1rem; }" in CSS  # the text's size, not 0.85em
