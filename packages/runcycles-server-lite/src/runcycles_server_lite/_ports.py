"""Check, before anything starts, that the ports the server will listen on are free.

uvicorn only binds after the store has started and the banner has been printed, so a busy port
used to show "serving http://..." followed by a bind traceback. Checking first lets the error
say which port, whether it is already a runcycles-server-lite, and which flag to change.
"""

from __future__ import annotations

import errno
import json
import socket
import urllib.error
import urllib.request

from .config import Settings


def _in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # The same option uvicorn sets: a port left in TIME_WAIT by a stopped server is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _is_cycles_server(host: str, port: int) -> bool:
    """True when the listener answers our health endpoint (a server left running)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if ":" in target:
        target = f"[{target}]"
    try:
        with urllib.request.urlopen(f"http://{target}:{port}/actuator/health", timeout=1.0) as resp:
            body = json.loads(resp.read() or b"null")
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(body, dict) and "status" in body


def busy_port_message(settings: Settings) -> str | None:
    """The error to print when a port the server needs is taken, else None."""
    wanted = [(settings.port, "--port PORT (or RUNCYCLES_PORT)")]
    if settings.admin_port is not None:
        wanted.append((settings.admin_port, "--admin-port PORT"))
    for port, flag in wanted:
        if not _in_use(settings.host, port):
            continue
        if _is_cycles_server(settings.host, port):
            who = (
                f"a runcycles-server-lite is already serving http://{settings.host}:{port} "
                "(stop it first, or use it as it is)"
            )
        else:
            who = f"another process is listening on {settings.host}:{port}"
        return (
            f"runcycles-server-lite: cannot listen on {settings.host}:{port}: {who}. "
            f"Pick a free port with {flag}."
        )
    return None
