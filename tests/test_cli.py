"""The `canhbao` command line: exit statuses, configuration errors, and how it is installed."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.cli.app import run
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
    """The venv has a `canhbao` script that runs dispatcher.cli.app:main."""
    assert shutil.which("canhbao", path=str(Path(sys.executable).parent))
    [entry] = importlib.metadata.entry_points(group="console_scripts", name="canhbao")
    assert entry.value == "dispatcher.cli.app:main"


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


# -- messages a Vietnamese operator can read ------------------------------------------------

ENGLISH = ("Usage", "Error", "Missing", "Invalid", "No such", "Try ", "Got unexpected", "Input should")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["alerts", "add", "--method", "romance"],
            "'canhbao alerts add' cần '--id', '--title', '--body' và '--source'.",
            id="every-missing-option",
        ),  # fmt: skip
        pytest.param(
            ["text", "inspect", "--jsn", "x"],
            "Không có tuỳ chọn '--jsn' trong 'canhbao text inspect'. Có phải ý bạn là '--json'",
            id="no-such-option",
        ),  # fmt: skip
        pytest.param(
            ["subscribers", "generate", "--province", "48", "--count", "many"],
            "Giá trị không hợp lệ cho '--count': cần một số nguyên, nhận được 'many'.",
            id="invalid-value",
        ),  # fmt: skip
        pytest.param(
            ["subscribers", "generate", "--province", "48", "--count", "0"],
            "cần từ 1 trở lên (≥ 1), nhận được '0'",
            id="out-of-range",
        ),  # fmt: skip
        pytest.param(["regions", "show"], "'canhbao regions show' cần 'name'.", id="missing-argument"),
        pytest.param(
            ["alerts", "lst"], "'canhbao alerts' không có lệnh 'lst'. Có phải ý bạn là 'list'?", id="no-such-command"
        ),
        pytest.param(["log", "--limit"], "Tuỳ chọn '--limit' cần một giá trị.", id="option-without-value"),
        pytest.param(["text", "inspect", "a", "b"], "Thừa đối số: b.", id="extra-argument"),
    ],
)
def test_usage_errors_are_in_vietnamese(config: Path, capsys: pytest.CaptureFixture[str], args, expected) -> None:
    """Click's own refusals read Vietnamese, name what is wrong and where, and point at --help."""
    assert run(["--config", str(config), *args]) == 2
    err = capsys.readouterr().err
    assert expected in " ".join(err.split())
    assert not [word for word in ENGLISH if word in err]


def test_help_reads_vietnamese(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A command's --help has Vietnamese headings, marks and help option, and lists --as."""
    assert run(["--config", str(config), "blast", "approve", "--help"]) == 0
    out = capsys.readouterr().out
    for words in ("Cách dùng: canhbao blast approve [TUỲ_CHỌN]", "Đối số", "Tuỳ chọn", "[bắt buộc]", "--as",
                  "Xem hướng dẫn này rồi thoát."):  # fmt: skip
        assert words in out
    assert not [word for word in ("Usage", "Options", "Arguments", "Show this message", "[required]") if word in out]


def test_the_root_help_reads_vietnamese(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`canhbao --help` names its options and commands in Vietnamese too, not click's [OPTIONS] COMMAND."""
    assert run(["--config", str(config), "--help"]) == 0
    out = capsys.readouterr().out
    assert "Cách dùng: canhbao [TUỲ_CHỌN] LỆNH [ĐỐI_SỐ]..." in out
    assert not [word for word in ("OPTIONS", "COMMAND", "ARGS", "Usage") if word in out]


@pytest.mark.parametrize("how", ["after-the-command", "before-the-command", "environment"])
def test_the_acting_user_is_named_anywhere(config: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """`--as` after the command, before it, or CANHBAO_USER all name who acts: the author may not approve."""

    def canhbao(user: str, *args: str) -> int:
        monkeypatch.delenv("CANHBAO_USER", raising=False)
        if how == "environment":
            monkeypatch.setenv("CANHBAO_USER", user)
            return run(["--config", str(config), *args])
        before = ["--as", user] if how == "before-the-command" else []
        return run(["--config", str(config), *before, *args, *([] if before else ["--as", user])])

    messages = Path(__file__).parent.parent / "messages"
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f'[catalogue]\nmessages_dir = "{messages}"\n')
    assert run(["--config", str(config), "db", "upgrade"]) == 0
    assert canhbao("cong-an", "alerts", "sync") == 0
    assert canhbao("cong-an", "alerts", "submit", "khong-cung-cap-ma-otp") == 0
    assert canhbao("cong-an", "alerts", "approve", "khong-cung-cap-ma-otp") == 2  # four-eyes: the author
    assert canhbao("lanh-dao", "alerts", "approve", "khong-cung-cap-ma-otp") == 0


def test_two_different_acting_users_are_refused(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--as a … --as b` is refused rather than picking one of them silently."""
    assert run(["--config", str(config), "--as", "a", "alerts", "list", "--as", "b"]) == 2
    assert "'a' và 'b'" in capsys.readouterr().err


# -- one exit/JSON contract ---------------------------------------------------------------


def _bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text("[policy]\nurgent_share = 1\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "status", "code", "words"),
    [
        pytest.param(["text", "inspect", "--nope", "x"], 2, "usage", "Không có tuỳ chọn '--nope'", id="click-usage"),
        pytest.param(["blast", "create"], 2, "usage", "cần '--alert'", id="missing-option"),
        pytest.param(["alerts", "methods", "--config-from", "bad"], 2, "config", "'policy.urgent_share'", id="config"),
        pytest.param(
            ["alerts", "show", "khong-co"], 2, "not_found", "Không có mẫu cảnh báo 'khong-co'", id="not-found"
        ),
        pytest.param(["alerts", "approve", "khong-cung-cap-ma-otp"], 2, "state", "'nháp', cần 'chờ duyệt'", id="state"),
        pytest.param(["regions", "show", "Atlantis"], 2, "not_found", "Atlantis", id="unknown-region"),
        pytest.param(
            [
                "alerts",
                "add",
                "--id",
                "bien-la",
                "--method",
                "romance",
                "--title",
                "T",
                "--source",
                "S",
                "--body",
                "Ở {ten_huyen}.",
            ],
            1,
            "rejected",
            "{ten_huyen}",
            id="rejected",
        ),  # fmt: skip
    ],
)
def test_an_error_with_json_is_one_json_document(cli, tmp_path: Path, args, status, code, words) -> None:
    """With --json every kind of error is exactly one {"error": {code, message}} document on stdout."""
    if "--config-from" in args:
        cli.config = _bad_config(tmp_path)
        args = args[:2]
    else:
        cli("alerts", "sync")
    exit_status, out, _err = cli(*args, "--json")
    assert exit_status == status
    document = json.loads(out)
    assert list(document) == ["error"] and set(document["error"]) == {"code", "message"}
    assert document["error"]["code"] == code
    assert words in document["error"]["message"]


@pytest.mark.parametrize(
    "option",
    [["--channel", "fax"], ["--audience", "astronaut"], ["--carrier", "beeline"], ["--encoding", "morse"]],
    ids=["channel", "audience", "carrier", "encoding"],
)
def test_a_bad_option_value_of_blast_create_is_a_usage_error(cli, option: list[str]) -> None:
    """An unknown channel, audience, carrier or encoding is the same mistake: exit 2, code 'usage'."""
    cli("alerts", "sync")
    args = ["blast", "create", "--alert", "khong-cung-cap-ma-otp", "--province", "Đà Nẵng", *option, "--dry-run"]
    status, out, _err = cli(*args, "--json")
    assert (status, json.loads(out)["error"]["code"]) == (2, "usage")


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_ctrl_c_stops_a_command_with_130_and_says_so(cli, as_json: bool) -> None:
    """SIGINT to `blast status N --watch`: exit 130, 'Đã dừng' in Vietnamese, with --json the one error document."""
    alert = "gia-danh-cong-an-goi-video"
    steps = [
        ("police", "alerts", "sync"), ("police", "alerts", "submit", alert), ("chief", "alerts", "approve", alert),
        ("tester", "subscribers", "generate", "--province", "48", "--count", "20"),
        ("liaison", "blast", "create", "--alert", alert, "--province", "Đà Nẵng", "--audience", "all"),
        ("chief", "blast", "approve", "1"),
    ]  # fmt: skip
    for user, *args in steps:
        assert cli(*args, user=user)[0] == 0, args
    shared = cli.root / "canhbao.db-shm"  # SQLite makes it when a first connection opens, drops it with the last
    assert not shared.exists()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANHBAO_")}
    command = [sys.executable, "-m", "dispatcher", "--config", str(cli.config), "blast", "status", "1", "--watch"]
    child = subprocess.Popen([*command, *(["--json"] if as_json else [])], env=environ, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, encoding="utf-8")  # fmt: skip
    deadline = time.monotonic() + 60  # only against a hang: the watch itself never ends, no worker runs
    while not shared.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Đã dừng theo yêu cầu (Ctrl-C)" in err and "Traceback" not in err
    if as_json:
        assert json.loads(out)["error"]["code"] == "interrupted"
