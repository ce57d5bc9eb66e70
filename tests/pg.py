"""Throwaway PostgreSQL clusters for the tests and the benchmarks (see shared/reference)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def bindir() -> Path | None:
    """Where the PostgreSQL server binaries are (Debian's versioned folder first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user() -> list[str]:
    """The command prefix that runs PostgreSQL as a non-root user (it refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def cluster(settings: str, stop: str = "immediate") -> Iterator[str | None]:
    """A cluster on 127.0.0.1 with server `settings` ('-c name=value …'); its base URL, None without binaries."""
    binaries = bindir()
    if binaries is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="canhbao-pg-"))
    prefix = _as_user()
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    run = lambda *args: subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True)  # noqa: E731
    run(binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 {settings}"
    run(binaries / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options, "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        run(binaries / "pg_ctl", "-D", data, "-m", stop, "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: str) -> str:
    """A new empty database on `server`; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


def clone_database(url: str, template: str) -> None:
    """Make the database at `url` (empty, unused) a copy of the database named `template` on the same server."""
    import psycopg

    server, name = url.rsplit("/", 1)
    plain = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
