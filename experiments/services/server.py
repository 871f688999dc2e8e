"""Start the team's shared MLflow tracking server: PostgreSQL backend store, proxied artifacts.

    export PGPASSWORD=...      # libpq reads it, so the password stays out of URLs and `ps`
    python -m experiments server \\
        --backend-store-uri postgresql://team@127.0.0.1:5432/mlflow \\
        --artifacts-destination /srv/mlflow/artifacts --host 127.0.0.1 --port 5000

Experiments then point at it with `export MLFLOW_TRACKING_URI=http://127.0.0.1:5000` (or
`--tracking-uri`) and record the same runs, params, metrics and artifacts as with the
embedded SQLite store. Clients only talk HTTP: they need neither a database driver nor
access to the artifact folder, which the server proxies (`--serve-artifacts`).

Before `mlflow server` starts, this command checks what usually goes wrong and says how to
fix it: a missing PostgreSQL driver, a database that does not exist or refuses the login,
a port already in use or out of range. With `--auth` it runs MLflow's basic-auth app
(experiments/services/auth.py): every request needs a user name and password. Flags it does
not know are passed on to `mlflow server` (e.g. `--allowed-hosts mlflow.lab.example`,
`--workers 8`). experiments/docs/scaling-out.md shows how to create the PostgreSQL role and
database.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from experiments.errors import ConfigError
from experiments.services import auth
from experiments.tracking import servers
from experiments.tracking.servers import LOOPBACK
from experiments.tracking.store import mlflow_command, redact

SQL_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite")  # each with any driver (`+psycopg2`)


def check_backend_store(uri: str) -> None:
    """Connect once to the backend store, turning the usual failures into actionable errors."""
    scheme = urlsplit(uri).scheme
    if scheme.split("+")[0] not in SQL_SCHEMES:
        raise ConfigError(
            f"--backend-store-uri {redact(uri)!r}: scheme {scheme!r} is not a database; "
            "expected e.g. postgresql://USER@HOST:5432/DATABASE"
        )
    import sqlalchemy

    connect_args = {"connect_timeout": 5} if scheme.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
    except ImportError as exc:
        # SQLAlchemy >= 2.1 opens postgresql:// with psycopg 3, older releases with psycopg2.
        raise ConfigError(
            f"--backend-store-uri {redact(uri)}: its database driver is not installed "
            f"({exc}); pip install -e '.[postgres]'"
        ) from exc
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.OperationalError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        hint = ""
        if "does not exist" in detail:
            database = urlsplit(uri).path.lstrip("/")
            hint = f"; create it with: sudo -u postgres createdb --owner USER {database}"
        elif "password" in detail or "authentication" in detail:
            hint = "; set PGPASSWORD (or ~/.pgpass) for this role"
        elif "Connection refused" in detail or "could not connect" in detail:
            hint = "; is PostgreSQL running? (Debian: sudo pg_ctlcluster 15 main start)"
        raise ConfigError(f"--backend-store-uri {redact(uri)}: {detail}{hint}") from exc
    finally:
        engine.dispose()


def artifacts_destination(value: str) -> str:
    """A local folder becomes an absolute path (created); a URI (s3://, gs://...) is kept."""
    if "://" in value:
        return value
    folder = Path(value).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def server_command(host: str, port: int, artifacts: str, extra: Sequence[str] = ()) -> list[str]:
    """The `mlflow server` command line. The backend store URI is passed in the environment
    (MLFLOW_BACKEND_STORE_URI) so a password in it never shows in the process list."""
    return [
        *mlflow_command(),
        "server",
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        *extra,
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend-store-uri",
        default=os.environ.get("MLFLOW_BACKEND_STORE_URI"),
        help="SQLAlchemy URL of the runs database, e.g. postgresql://team@127.0.0.1:5432/mlflow "
        "(default: $MLFLOW_BACKEND_STORE_URI)",
    )
    parser.add_argument(
        "--artifacts-destination",
        default="mlartifacts",
        help="where the server stores artifacts: a folder or a URI like s3://bucket/path "
        "(default: ./mlartifacts)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require a user name and password (MLflow's basic-auth app; the admin's password "
        "is drawn at the first start, printed once and kept in --auth-dir)",
    )
    parser.add_argument(
        "--auth-dir",
        default=str(auth.AUTH_DIR),
        help=f"folder of the user database and the admin's password file (default: {auth.AUTH_DIR})",
    )
    parser.add_argument(
        "--skip-checks",
        action="store_true",
        help="start mlflow server without the pre-flight checks",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    uri = args.backend_store_uri
    try:
        if not uri:
            raise ConfigError(
                "--backend-store-uri is required (or set MLFLOW_BACKEND_STORE_URI), e.g. "
                "postgresql://team@127.0.0.1:5432/mlflow"
            )
        servers.check_port(args.host, args.port)
        if args.auth:
            auth.check_installed()
        if not args.skip_checks:
            check_backend_store(uri)
        # Created only once the checks passed: a refused command leaves nothing behind.
        artifacts = artifacts_destination(args.artifacts_destination)
        auth_env, auth_lines = auth.prepare(Path(args.auth_dir)) if args.auth else ({}, [])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.auth:
        extra = ["--app-name", "basic-auth", *extra]

    # Bound to every interface: others reach it by this machine's name, not 0.0.0.0.
    url_host = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
    url_host = f"[{url_host}]" if ":" in url_host else url_host
    url = f"http://{url_host}:{args.port}"
    where = "loopback only" if args.host in LOOPBACK else "reachable from the network"
    print(f"MLflow server at {url} ({where})")
    print(f"  runs:      {redact(uri)}")
    print(f"  artifacts: {artifacts}")
    for line in auth_lines or [f"Point experiments at it:  export MLFLOW_TRACKING_URI={url}"]:
        print(line)
    if args.auth:
        print("\n".join(auth.client_lines(url)))
    print("Stop with Ctrl-C.", flush=True)
    env = {**os.environ, **auth_env, "MLFLOW_BACKEND_STORE_URI": uri}
    # Its own process group, stopped with this process however it stops (tracking/servers.py):
    # Ctrl-C or SIGTERM here, or a SIGKILL, stops mlflow and its uvicorn workers together.
    return servers.run_tied(server_command(args.host, args.port, artifacts, extra), env)
