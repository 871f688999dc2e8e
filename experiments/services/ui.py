"""Serve the MLflow UI for the project's store, on 127.0.0.1 unless told otherwise.

python -m experiments ui                 # http://127.0.0.1:5000
python -m experiments ui --port 5001 --tracking-uri sqlite:///other/mlflow.db
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from experiments.errors import ConfigError
from experiments.tracking import servers, store


def server_command(uri: str, host: str, port: int) -> list[str]:
    """The `mlflow server` command line that serves `uri` (a local SQLite store) on host:port."""
    store.client(uri)  # creates the folder so the server can open the file
    artifacts = (store.local_root(uri) / "artifacts").resolve()
    return [
        *store.mlflow_command(),
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--default-artifact-root",
        artifacts.as_uri(),
    ]


def runs_page(experiment_id: str) -> str:
    """The UI's route to an experiment's training runs. MLflow 3's UI shows its GenAI view
    (traces) unless the workflow is "machine_learning": set by this URL parameter, or by its
    "Model training" switch (remembered by the browser)."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def training_experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's experiments that hold runs, each tagged as a training
    experiment (`store.EXPERIMENT_KIND_TAG`; an older store's get it now)."""
    client = store.client(uri)
    found = []
    for experiment in client.search_experiments():
        if not client.search_runs([experiment.experiment_id], max_results=1):
            continue  # MLflow's empty Default experiment
        store.ensure_experiment(client, uri, experiment.name)
        found.append((experiment.name, experiment.experiment_id))
    return found


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments ui",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # one example per line
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--tracking-uri", help="store to serve (default: embedded store)")
    args = parser.parse_args(argv)
    uri = store.resolve_tracking_uri(args.tracking_uri)
    try:
        if store.sqlite_path(uri) is None:
            raise ConfigError(f"{uri} is not a local store; open it in a browser directly")
        servers.check_port(args.host, args.port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = "loopback only" if args.host in servers.LOOPBACK else "ALL listed"
    site = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {site} (bound to {args.host}: {where})")
    for name, experiment_id in training_experiments(uri):
        print(f"  {name} runs: {site}/{runs_page(experiment_id)}")
    print("Stop with Ctrl-C.", flush=True)
    # the server stops with this process, however it stops (tracking/servers.py)
    return servers.run_tied(server_command(uri, args.host, args.port), os.environ)
