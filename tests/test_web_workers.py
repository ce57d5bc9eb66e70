"""`canhbao web --workers N`: several processes serving one port, supervised, stopped together."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dispatcher.config import load_settings


@pytest.fixture
def supervised(sqlite_engine: Engine, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`canhbao web --workers 2 --port 0` on a migrated SQLite database: the supervisor and where it listens."""
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    env = {**os.environ, "CANHBAO_CONFIG": str(tmp_path / "none.toml"),
           "CANHBAO_DATABASE__URL": sqlite_engine.url.render_as_string(hide_password=False)}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "dispatcher", "web", "--port", "0", "--workers", "2"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        said = (re.search(r"http://127\.0\.0\.1:(\d+)", process.stderr.readline()) for _ in range(50))
        base = f"http://127.0.0.1:{next(found for found in said if found).group(1)}"
        _wait(lambda: len(_children(process.pid)) == 2 and _health(base) == 200)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=20)


def test_each_process_answers_on_the_shared_port(supervised) -> None:
    """With either process stopped, the other answers on the same port."""
    process, base = supervised
    answers = []
    for child in _children(process.pid):
        others = [pid for pid in _children(process.pid) if pid != child]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            answers.append(_health(base))
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
    assert answers == [200, 200]


def test_a_process_that_dies_is_replaced(supervised) -> None:
    """A process killed outright is replaced by a new one, and the port goes on answering."""
    process, base = supervised
    first, second = _children(process.pid)
    os.kill(first, signal.SIGKILL)
    _wait(lambda: len(_children(process.pid)) == 2 and first not in _children(process.pid))
    assert second in _children(process.pid)
    assert _health(base) == 200


def test_sigterm_stops_every_process(supervised) -> None:
    """SIGTERM to the supervisor ends both processes and then itself, cleanly, leaving none behind."""
    process, _ = supervised
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, said = process.communicate(timeout=30)
    assert process.returncode == 0 and "Đã dừng cổng web." in said
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def test_workers_come_from_the_web_section(tmp_path: Path) -> None:
    """`[web] workers` is read from the configuration; one process unless said."""
    (tmp_path / "config.toml").write_text("[web]\nworkers = 3\n", encoding="utf-8")
    assert load_settings(tmp_path / "config.toml").web.workers == 3
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    assert load_settings(tmp_path / "config.toml").web.workers == 1


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux)."""
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found if _alive(int(child))]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _health(base: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            return response.status
    except OSError:
        return None


def _wait(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)
