"""`python -m experiments dashboard`: Optuna Dashboard on the project's studies, live.

    python -m experiments dashboard                           # http://127.0.0.1:8080/dashboard
    python -m experiments dashboard --port 8081 --tracking-uri sqlite:///other/mlflow.db
    python -m experiments dashboard --storage postgresql://team@127.0.0.1:5432/optuna

It reads the studies `python -m experiments search` writes (the journal file
mlruns/optuna/journal.log of the store by default, or --storage: a journal file or a
PostgreSQL URL) while they run: trials, their values per epoch, plots, and per trial its
MLflow run's address (user attribute `mlflow_run`). It needs the optional extra:
`pip install -e '.[dashboard]'`.

It serves on 127.0.0.1 only. The dashboard has no login and can change studies (notes,
deleting a study): serving it beyond this machine needs `--host ADDRESS --allow-network`
and prints that warning. The server is a child process that stops with this command
however it stops (Ctrl-C, SIGTERM, even kill -9: a watchdog, tracking/servers.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from experiments.errors import ConfigError
from experiments.search.storage import default_storage, is_rdb
from experiments.tracking import servers, store
from experiments.tracking.servers import LOOPBACK

INSTALL = "pip install -e '.[dashboard]'"
#: the storage URL, passed in the environment so a password never shows in `ps`
STORAGE_ENV = "EXPERIMENTS_DASHBOARD_STORAGE"
START_TIMEOUT = 120  # seconds for the server to answer (imports on a busy machine)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--storage", help="Optuna storage: journal file or postgresql:// (default: the store's)"
    )
    parser.add_argument(
        "--tracking-uri", help="the store whose studies to show (default: embedded)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument(
        "--allow-network",
        action="store_true",
        help="allow a --host other than loopback (the dashboard has no login)",
    )
    return parser


def check(args) -> str:
    """The storage to serve; ConfigError for what cannot work (nothing started yet)."""
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"the dashboard needs the optional package optuna-dashboard: {INSTALL}"
        ) from None
    if args.host not in LOOPBACK and not args.allow_network:
        raise ConfigError(
            f"--host {args.host}: the dashboard has no login and can change studies; to serve "
            "it beyond this machine add --allow-network (or keep the default 127.0.0.1)"
        )
    storage = args.storage or default_storage(
        store.local_root(store.resolve_tracking_uri(args.tracking_uri))
    )
    if not is_rdb(storage) and not Path(storage).is_file():
        raise ConfigError(
            f"no Optuna study storage at {storage}: start a study first "
            "(python -m experiments search lr) or name one with --storage"
        )
    servers.check_port(args.host, args.port)
    return storage


def studies(storage: str) -> list[tuple[str, int]]:
    """(name, trials) of each study in the storage."""
    import optuna

    from experiments.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = optuna.study.get_all_study_summaries(open_storage(storage), include_best_trial=False)
    return [(s.study_name, s.n_trials) for s in found]


def wait_until_up(proc: subprocess.Popen, url: str) -> bool:
    """Whether the server answers `url` with JSON within START_TIMEOUT (False once it exits)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                json.loads(response.read())
                return True
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
    return False


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        storage = check(args)
        try:
            found = studies(storage)
        except Exception as exc:  # an unreachable database, a journal of another format
            raise ConfigError(
                f"--storage {store.redact(storage)}: cannot be read "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(
            f"warning: serving on {args.host}: anyone who can reach this port can read and "
            "change the studies (no login)",
            file=sys.stderr,
        )
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    site = f"http://{url_host}:{args.port}"

    def announce(proc: subprocess.Popen) -> int | None:
        if not wait_until_up(proc, f"{site}/api/studies"):
            print(f"error: the dashboard did not start on {site}", file=sys.stderr)
            return 1
        print(f"Optuna Dashboard for {store.redact(storage)} at {site}/dashboard")
        for name, trials in found:
            print(f"  {name}: {trials} trials")
        print("Stop with Ctrl-C.", flush=True)
        return None

    # The server process, tied to this one (tracking/servers.py): it stops when this
    # process ends, however it ends.
    env = {**os.environ, STORAGE_ENV: storage}
    command = [sys.executable, "-m", "experiments.services.dashboard", args.host, str(args.port)]
    return servers.run_tied(command, env, started=announce)


# --- the server process (`python -m experiments.services.dashboard HOST PORT`) -----------


def serve(host: str, port: int) -> None:
    """Optuna Dashboard's WSGI app (its public `wsgi`) on a threaded stdlib server."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna
    from optuna_dashboard import wsgi

    from experiments.search.storage import open_storage

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args) -> None:  # one line per request: noise
            pass

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    app = wsgi(open_storage(os.environ[STORAGE_ENV]))
    with make_server(host, port, app, server_class=Server, handler_class=QuietHandler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole group: quietly
        serve(sys.argv[1], int(sys.argv[2]))
