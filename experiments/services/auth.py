"""`server --auth`: MLflow's basic-auth app, its admin created once with a random password.

    python -m experiments server --backend-store-uri postgresql://team@127.0.0.1:5432/mlflow --auth

MLflow's basic-auth app (`mlflow server --app-name basic-auth`, the `auth` extra) answers
401 to any request without a valid user and password. Its files (one folder, `AUTH_DIR`,
default `~/.config/experiments/server-auth/`, `--auth-dir` elsewhere, readable only by its
owner), the admin password drawn on the first start (`secrets.token_urlsafe`, 24
characters; passed in MLFLOW_AUTH_ADMIN_PASSWORD, never on a command line) and how
clients log in: docs/scaling-out.md.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from experiments.errors import ConfigError

ADMIN = "admin"
#: where the auth database, its configuration and the admin's password file live
AUTH_DIR = Path("~/.config/experiments/server-auth")
PASSWORD_FILE = "admin-password"
SECRET_FILE = "flask-secret-key"  # MLFLOW_FLASK_SERVER_SECRET_KEY: the app's CSRF key

CONFIG = """[mlflow]
default_permission = READ
database_uri = sqlite:///{db}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def check_installed() -> None:
    """Refuse (ConfigError) when MLflow's `auth` extra is missing."""
    try:
        import flask_wtf  # noqa: F401  (what `--app-name basic-auth` needs beyond mlflow)
    except ImportError as exc:
        raise ConfigError(
            "--auth: MLflow's basic-auth app needs its `auth` extra (Flask-WTF), which is not "
            "installed; pip install -e '.[auth]'"
        ) from exc


def prepare(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Create or reuse the auth folder; (environment for `mlflow server`, lines to print)."""
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    db = folder / "basic_auth.db"
    config = folder / "basic_auth.ini"
    if not config.is_file():  # kept as it is once written: a team may edit it
        config.write_text(CONFIG.format(db=db, admin=ADMIN))
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(folder / SECRET_FILE),
    }
    password_file = folder / PASSWORD_FILE
    if db.is_file():
        where = (
            f"its password is in {password_file}"
            if password_file.is_file()
            else "its password is the one printed at the first start"
        )
        return env, [f"  auth:      reusing {db} (admin user {ADMIN!r}; {where})"]
    password = secrets.token_urlsafe(18)  # 24 characters
    password_file.unlink(missing_ok=True)  # a stale one from a deleted database
    _write_private(password_file, password)
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    return env, [
        f"  auth:      new user database {db}; admin user {ADMIN!r}, password (shown once):",
        f"             {password}",
        f"             kept in {password_file} (readable only by you)",
    ]


def _write_private(path: Path, text: str) -> None:
    """A new file only its owner can read and write (0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def _secret(path: Path) -> str:
    """The key MLflow signs its CSRF tokens with: drawn once, kept (0600), reused."""
    if not path.is_file():
        _write_private(path, secrets.token_hex(32))
    return path.read_text().strip()


def client_lines(url: str) -> list[str]:
    """How a client reaches the server with a user name and password."""
    return [
        f"Point experiments at it:  export MLFLOW_TRACKING_URI={url}",
        f"  and authenticate:       export MLFLOW_TRACKING_USERNAME={ADMIN} "
        "MLFLOW_TRACKING_PASSWORD=...",
    ]
