"""The README's five-minute tour, run as a new user would: every command, top to bottom, as written.

The tour's ```bash blocks are run by bash in a fresh folder holding what a clone holds (config.toml,
messages/, schedules/, tests/data/), with the project's `canhbao` first on PATH and no CANHBAO_
variables: the default configuration on a fresh SQLite database. Commands that run until stopped
(`worker` without --until-idle, `serve`, `scheduler`, `blast status --watch` of a blast still going)
are stopped with Ctrl-C after a moment, as a user would, and must stop cleanly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
# Processes that run until stopped: the tour shows how to start them.
UNTIL_STOPPED = re.compile(
    r"^canhbao(\s+--\S+(\s+\S+)?)*\s+(serve|scheduler|web|worker(?!.*--until-idle)|blast status .*--watch)\b"
)
# Watching a blast that is still going ends only with Ctrl-C, which exits 130.
WATCHES = re.compile(r"--watch\b")
# A command the tour shows failing says so in its comment: "exits 1, the sample has bad rows".
EXITS = re.compile(r"#.*\bexits (\d+)\b")


def tour_commands(readme: str) -> list[tuple[str, int]]:
    """(command, exit status it is shown with) of the tour's bash blocks, continuation lines joined."""
    tour = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", tour, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = _without_comment(line).strip()
            if command:
                said = EXITS.search(line[len(_without_comment(line)) :])
                commands.append((" ".join(command.split()), int(said[1]) if said else 0))
    return commands


def _without_comment(line: str) -> str:
    """The line up to a '#' that starts a shell comment (not one inside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A folder holding what a fresh clone holds that the tour reads."""
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    for folder in ("messages", "schedules", "tests/data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANHBAO_")}
    environ |= {"PATH": f"{BIN}{os.pathsep}{environ.get('PATH', '')}", "COLUMNS": "100", "USER": "nguoi-dung"}
    if not UNTIL_STOPPED.match(command):
        return subprocess.run(["bash", "-c", command], cwd=cwd, env=environ, capture_output=True, text=True,
                              encoding="utf-8", timeout=180)  # fmt: skip
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=environ, text=True, encoding="utf-8",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    said: tuple[list[str], list[str]] = ([], [])
    readers = [threading.Thread(target=lambda stream=stream, into=into: into.extend(stream), daemon=True)
               for stream, into in zip((process.stdout, process.stderr), said, strict=True)]  # fmt: skip
    for reader in readers:
        reader.start()
    # As a person does: Ctrl-C once it says it runs (a loaded machine may take seconds to start it).
    deadline = time.monotonic() + 30
    while process.poll() is None and not any(said) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        time.sleep(2)
        process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    for reader in readers:
        reader.join(timeout=10)
    return subprocess.CompletedProcess(command, process.returncode, "".join(said[0]), "".join(said[1]))


def test_the_tour_lists_the_commands_of_every_step() -> None:
    """The tour has commands for every step, none with a placeholder a user would have to fill in."""
    commands = [command for command, _status in tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert len(commands) >= 20
    assert all(command.startswith("canhbao ") for command in commands), commands
    assert not [command for command in commands if "…" in command or "|" in command]


def test_the_tour_runs_top_to_bottom_on_a_fresh_database(clone: Path) -> None:
    """Every command of the tour, run in order as written, succeeds and prints Vietnamese, never a traceback."""
    for command, status in tour_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        done = _run(command, clone)
        allowed = {status, 130} if WATCHES.search(command) else {status}
        assert done.returncode in allowed, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr}"
        command, _, target = command.partition(" > ")
        printed = (clone / target).read_text(encoding="utf-8-sig") if target else done.stdout + done.stderr
        assert printed.strip(), f"{command} printed nothing"
