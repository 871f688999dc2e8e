"""The MLflow UI in a real browser: a study's parent and child runs, the compare view, the
experiment opening on its runs list, and the best trial's logged model in the Models tab.

    python -m pytest tests/test_ui_browser.py -m slow

Starts `python -m experiments ui` on loopback over a store holding a small real study,
drives Debian's headless Chromium through chromedriver's W3C WebDriver protocol (plain
HTTP + JSON, so no client library), and keeps screenshots in $TEST_ARTIFACTS_DIR
(default: ./test-artifacts). The MLflow UI is a React app: everything is checked on the
rendered page text, waiting for it to appear.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow import MlflowClient

from experiments.search import cli as search
from experiments.services.ui import runs_page as ui_page
from tests.helpers import REPO, RunIf, child_env, data_overrides, free_port, stop_group

PORTS = range(5510, 5550)  # this test's share of the project's UI port range
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


class WebDriver:
    """The few W3C WebDriver commands this test needs, over chromedriver's HTTP API."""

    def __init__(self, base: str, profile: Path) -> None:
        self.base = base
        options = {"args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]}
        binary = shutil.which("chromium")
        if binary and Path("/usr/lib/chromium/chromium").exists():
            options["binary"] = "/usr/lib/chromium/chromium"  # Debian's wrapper is a script
        caps = {"browserName": "chrome", "goog:chromeOptions": options}
        session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def get(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def text(self) -> str:
        script = {"script": "return document.body ? document.body.innerText : ''", "args": []}
        return self._call("POST", f"{self.session}/execute/sync", script)

    def click_all(self, css: str) -> int:
        found = self._call(
            "POST", f"{self.session}/elements", {"using": "css selector", "value": css}
        )
        for element in found:
            element_id = next(iter(element.values()))
            self._call("POST", f"{self.session}/element/{element_id}/click", {})
        return len(found)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))

    def quit(self) -> None:
        self._call("DELETE", self.session)

    def wait_for_text(self, needles: list[str], timeout: float, shot: Path) -> str:
        def seen():
            text = self.text()
            return text if all(n in text for n in needles) else None

        try:
            return wait(seen, timeout, f"page text {needles}")
        except BaseException:
            self.screenshot(shot)  # what the page showed instead, for the CI log
            raise


@pytest.mark.slow
@RunIf(chromium=True)
def test_study_runs_and_compare_view_render_in_chromium(store, fashion_dir, tmp_path):
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))

    # A real study: a parent run with two nested trial runs.
    overrides = data_overrides("s1-mlp", fashion_dir, None)
    argv = ["lr", "--trials", "2", "--pruner", "none", "--tracking-uri", store, *overrides]
    assert search.main([*argv, "--register", "fashion-mlp"]) == 0
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("fashion-mnist")
    runs = client.search_runs([experiment.experiment_id], "tags.study_name = 'lr-s1-mlp'")
    children = sorted(
        (r for r in runs if r.data.tags["study_role"] == "trial"), key=lambda r: r.info.run_name
    )
    assert len(children) == 2

    ui_port = free_port(PORTS)
    driver_port = free_port(PORTS, exclude=(ui_port,))
    env = child_env()
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments",
            "ui",
            "--port",
            str(ui_port),
            "--tracking-uri",
            store,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    chromedriver = subprocess.Popen(
        ["chromedriver", f"--port={driver_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    driver = None
    try:
        site = f"http://127.0.0.1:{ui_port}"
        # mlflow server starts uvicorn workers and a job runner: slow on a busy machine.
        wait(lambda: http_ok(f"{site}/health"), 300, "the MLflow UI", ui)
        wait(lambda: http_ok(f"http://127.0.0.1:{driver_port}/status"), 60, "chromedriver")
        driver = WebDriver(f"http://127.0.0.1:{driver_port}", tmp_path / "chromium-profile")

        # The runs page: the parent is listed; expanding it shows the nested trial runs.
        driver.get(f"{site}/#/experiments/{experiment.experiment_id}/runs")
        driver.wait_for_text(["lr-s1-mlp"], 120, artifacts / "ui_runs_failed.png")
        expanders = "button[data-component-id*='runnamecellrenderer']"
        assert driver.click_all(expanders) >= 1, "no expander next to the parent run"
        names = [c.info.run_name for c in children]
        driver.wait_for_text(names, 60, artifacts / "ui_runs_failed.png")
        driver.screenshot(artifacts / "ui_study_runs.png")

        # The compare view of the two trial runs renders both runs and their metrics.
        ids = quote(json.dumps([c.info.run_id for c in children]))
        experiments = quote(json.dumps([experiment.experiment_id]))
        driver.get(f"{site}/#/compare-runs?runs={ids}&experiments={experiments}")
        expected = ["Comparing 2 Runs", *names, "test/acc", "objective/val/acc"]
        # The parallel-coordinates plot labels each run's last val/loss (5 decimals).
        expected += [f"{c.data.metrics['val/loss']:.5f}" for c in children]
        driver.wait_for_text(expected, 120, artifacts / "ui_compare_failed.png")
        driver.screenshot(artifacts / "ui_compare_runs.png")
        assert (artifacts / "ui_compare_runs.png").stat().st_size > 10_000

        # The page `ui` prints for the experiment opens on its training runs (MLflow's
        # "Model training" view: runs, models, registry), not on the GenAI view of traces.
        driver.get(f"{site}/{ui_page(experiment.experiment_id)}")
        expected = ["Model registry", "lr-s1-mlp", "matching runs"]
        driver.wait_for_text(expected, 120, artifacts / "ui_experiment_failed.png")
        assert "Detect Issues" not in driver.text()
        driver.screenshot(artifacts / "ui_experiment_home.png")

        # The best trial's model in the experiment's Models tab: its source run and its
        # registered version.
        (model,) = client.search_logged_models(experiment_ids=[experiment.experiment_id])
        best = client.get_run(model.source_run_id)
        models_page = ui_page(experiment.experiment_id).replace("/runs?", "/models?")
        driver.get(f"{site}/{models_page}")
        expected = ["Registered models", best.info.run_name, "fashion-mlp", "v1"]
        driver.wait_for_text(expected, 120, artifacts / "ui_models_failed.png")
        driver.screenshot(artifacts / "ui_models.png")
        # ... and on the run's page, with its datasets and system metrics.
        run_page = ui_page(experiment.experiment_id).replace("/runs?", f"/runs/{best.info.run_id}?")
        driver.get(f"{site}/{run_page}")
        expected = ["Logged models (1)", "fashion-mlp", "fashion-mnist-train", "System metrics"]
        driver.wait_for_text(expected, 120, artifacts / "ui_run_failed.png")
        driver.screenshot(artifacts / "ui_run_model.png")
    finally:
        if driver is not None:
            driver.quit()
        stop_group(chromedriver)
        stop_group(ui)


def dashboard_study(site: str) -> dict | None:
    """The first study the dashboard's API lists, with its trials; None until it answers."""
    try:
        with urllib.request.urlopen(f"{site}/api/studies", timeout=5) as response:
            studies = json.loads(response.read())["study_summaries"]
        if not studies:
            return None
        study_id = studies[0]["study_id"]
        with urllib.request.urlopen(f"{site}/api/studies/{study_id}", timeout=5) as response:
            return {"study_id": study_id, **json.loads(response.read())}
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def trial_address(site: str) -> tuple[int, int, str] | None:
    """(study id, trial number, MLflow address) of the first trial that records its run."""
    study = dashboard_study(site)
    for trial in (study or {}).get("trials", []):
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        if "mlflow_run" in attrs:
            return study["study_id"], trial["number"], attrs["mlflow_run"]
    return None


@pytest.mark.slow
@RunIf(chromium=True, modules=["optuna_dashboard"])
def test_dashboard_shows_a_running_study_and_its_trials_mlflow_runs(store, fashion_dir, tmp_path):
    """`python -m experiments dashboard` during a real study: the study's page lists it by
    name, a trial's page shows the address of its MLflow run. The screenshot taken here is
    the one on the search docs page (experiments/docs/img/dashboard.png)."""
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))
    overrides = data_overrides("s1-mlp", fashion_dir, None)
    overrides[overrides.index("--trainer.max_epochs") + 1] = "3"
    argv = ["lr", "--trials", "4", "--pruner", "none", "--tracking-uri", store]
    env = child_env()
    log = (tmp_path / "search.log").open("w")
    study = subprocess.Popen(
        [sys.executable, "-m", "experiments", "search", *argv, "--no-system-metrics", *overrides],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    journal = tmp_path / "mlruns" / "optuna" / "journal.log"
    port = free_port(PORTS)
    driver_port = free_port(PORTS, exclude=(port,))
    dashboard = chromedriver = driver = None
    try:
        wait(lambda: journal.is_file() and journal.stat().st_size, 300, "the study", study)
        port_flag = ["--port", str(port)]
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "experiments", "dashboard", "--tracking-uri", store, *port_flag],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        chromedriver = subprocess.Popen(
            ["chromedriver", f"--port={driver_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        site = f"http://127.0.0.1:{port}"
        study_id, number, address = wait(lambda: trial_address(site), 300, "a trial", dashboard)
        client = MlflowClient(store)
        run_id = address.rsplit("/", 1)[1]
        assert client.get_run(run_id).data.tags["trial_number"] == str(number)
        wait(lambda: http_ok(f"http://127.0.0.1:{driver_port}/status"), 60, "chromedriver")
        driver = WebDriver(f"http://127.0.0.1:{driver_port}", tmp_path / "chromium-profile")

        driver.get(f"{site}/dashboard")
        driver.wait_for_text(["lr-s1-mlp"], 120, artifacts / "dashboard_failed.png")
        driver.get(f"{site}/dashboard/studies/{study_id}/trials?numbers={number}")
        expected = ["lr-s1-mlp", "User Attributes", "mlflow_run", address]
        driver.wait_for_text(expected, 120, artifacts / "dashboard_failed.png")
        driver.screenshot(artifacts / "dashboard.png")
        assert study.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()[-3000:]
    finally:
        if driver is not None:
            driver.quit()
        for proc in (chromedriver, dashboard, study):
            if proc is not None:
                stop_group(proc)
        log.close()
