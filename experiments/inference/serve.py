"""`python -m experiments serve MODEL`: MLflow's model server for a trained model, on loopback.

    python -m experiments serve models:/fashion-mlp/1              # http://127.0.0.1:5050
    python -m experiments serve RUN_ID --port 5051

It runs `mlflow models serve -m models:/... --env-manager local` in this environment
(no new virtualenv: torch is already here) against the project's store. The server answers
POST /invocations with {"inputs": [[[[...]]]]} (a batch of normalized images, as the model's
signature says) and returns {"predictions": [[p_0, ..., p_9], ...]} (class probabilities;
the class names are in the model's metadata). experiments/docs/using-models.md "Serve" shows a request.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from experiments import errors
from experiments.inference.reference import model_parser, model_uri_of
from experiments.tracking import servers, store


def serve_command(model_uri: str, host: str, port: int) -> list[str]:
    return [
        *store.mlflow_command(),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
    ]


def main(argv: Sequence[str]) -> int:
    parser = model_parser("serve", __doc__, checkpoints=False)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=5050)
    args = parser.parse_args(argv)
    uri = store.resolve_tracking_uri(args.tracking_uri)
    try:
        servers.check_port(args.host, args.port)
        model_uri = model_uri_of(args.model, uri)
    except errors.Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    where = "loopback only" if args.host in servers.LOOPBACK else "ALL listed"
    print(f"serving {model_uri} from {uri} at http://{args.host}:{args.port}/invocations ({where})")
    print("Stop with Ctrl-C.", flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # the server stops with this process, however it stops (tracking/servers.py)
    return servers.run_tied(serve_command(model_uri, args.host, args.port), env)
