"""Addresses the project's servers (`server`, `dashboard`) bind to: loopback names, free ports."""

from __future__ import annotations

import socket

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def port_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be listened on (in use, not an address here), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return (
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                "choose another port or stop what uses it"
            )
    return None
