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
from tests.conftest import DATA, Cli


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


def test_a_mistyped_database_url_is_refused_by_a_read_only_command(tmp_path: Path, capsys) -> None:
    """`subscribers stats` on a database that does not exist exits 2 saying so and what to run, and creates nothing."""
    cli = Cli(tmp_path, capsys, f"sqlite:///{tmp_path / 'canhbao-typo.db'}", create=False)
    code, out, err = cli("subscribers", "stats")
    assert (code, out) == (2, "")
    assert "Không có cơ sở dữ liệu tại sqlite:///" in err and "'canhbao db upgrade'" in err
    assert not (tmp_path / "canhbao-typo.db").exists()


def test_a_first_import_creates_the_database_with_a_notice(tmp_path: Path, capsys) -> None:
    """`subscribers import` on a fresh installation makes the database and says where, on stderr."""
    cli = Cli(tmp_path, capsys, f"sqlite:///{tmp_path / 'new.db'}", create=False)
    code, document = cli.json("subscribers", "import", str(DATA / "thue-bao-da-nang.csv"))
    assert (code, document["added"]) == (1, 7)
    _, _, err = cli("subscribers", "stats")
    assert "Đã tạo cơ sở dữ liệu mới" not in err  # only the first time
    code, _, err = Cli(tmp_path / "again", capsys, f"sqlite:///{tmp_path / 'other.db'}", create=False)(
        "subscribers", "generate", "--province", "48", "--count", "10"
    )
    assert code == 0 and f"Đã tạo cơ sở dữ liệu mới tại sqlite:///{tmp_path / 'other.db'}." in err
