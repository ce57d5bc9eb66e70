"""The `canhbao` command line: exit statuses, configuration errors, and how it is installed."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.cli import run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A valid config file on a private SQLite database."""
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "canhbao.db"}"\n[logging]\nlevel = "warning"\n')
    return path


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["no-such-command"], id="unknown-command"),
        pytest.param(["alerts", "no-such-command"], id="unknown-subcommand"),
        pytest.param(["text", "inspect", "--no-such-option", "x"], id="unknown-option"),
        pytest.param(["subscribers", "generate", "--province", "48", "--count", "many"], id="bad-option-value"),
        pytest.param(["regions", "show"], id="missing-argument"),
    ],
)
def test_a_usage_error_exits_2(config: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """An unknown command, an unknown option or a bad option value exits with status 2."""
    assert run(["--config", str(config), *args]) == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["text", "inspect", "Cảnh báo"], id="text-inspect"),
        pytest.param(["alerts", "methods"], id="alerts-methods"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
    ],
)
def test_a_wrong_config_key_stops_any_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """A misspelt key in the config file makes any command exit 2 with a message naming the key and the file."""
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "canhbao.db"}"\n[sms]\nmax_part = 3\n')
    assert run(["--config", str(path), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "'sms.max_part'" in captured.err
    assert str(path) in captured.err
    assert not (tmp_path / "canhbao.db").exists()


def test_python_m_dispatcher_prints_vietnamese_help(tmp_path: Path) -> None:
    """`python -m dispatcher --help` exits 0 and describes the commands in Vietnamese."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANHBAO_")}
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--help"],
        cwd=tmp_path,
        env={**environ, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Cảnh Báo: gửi cảnh báo lừa đảo qua SMS và Zalo." in done.stdout
    assert "Mẫu cảnh báo" in done.stdout
    assert "Địa giới hành chính" in done.stdout


def test_the_canhbao_console_script_is_installed() -> None:
    """The venv has a `canhbao` script that runs dispatcher.cli:main."""
    assert shutil.which("canhbao", path=str(Path(sys.executable).parent))
    [entry] = importlib.metadata.entry_points(group="console_scripts", name="canhbao")
    assert entry.value == "dispatcher.cli:main"
