"""Settings: config.toml, CANHBAO_ environment overrides and errors that say what to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from dispatcher.config import Settings, load_settings
from dispatcher.errors import ConfigError

REPOSITORY_CONFIG = Path(__file__).parent.parent / "config.toml"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Where a test writes its config.toml."""
    return tmp_path / "config.toml"


def write(path: Path, text: str) -> Path:
    """`path` holding the TOML `text`."""
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, environ: dict[str, str] | None = None) -> str:
    """The ConfigError message load_settings gives for `path` and `environ`."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    return str(caught.value)


# -- where values come from -------------------------------------------------------------------


def test_without_a_file_every_setting_has_its_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./config.toml is fine: the defaults are a working SQLite deployment."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.database.url == "sqlite:///var/canhbao.db"
    assert settings.sms.max_parts == 4
    assert settings.sms.price_for("viettel") == 650.0
    assert settings.logging.format == "auto"
    assert settings.gateways.names() == ["file", "simulator"]


def test_file_values_are_read(config: Path) -> None:
    """Values in the file replace the defaults; keys it leaves out keep theirs."""
    write(config, '[sms]\nmax_parts = 3\ncurrency = "USD"\n[sms.price_per_part]\ndefault = 0.02\nviettel = 0.03\n')
    settings = load_settings(config, {})
    assert (settings.sms.max_parts, settings.sms.currency) == (3, "USD")
    assert settings.sms.price_for("viettel") == 0.03
    assert settings.sms.price_for("itel") == 0.02
    assert settings.database.busy_timeout_ms == 30_000


def test_the_environment_overrides_one_nested_key(config: Path) -> None:
    """CANHBAO_SMS__MAX_PARTS replaces that key only; the rest of [sms] stays from the file."""
    write(config, '[sms]\nmax_parts = 3\ncurrency = "USD"\n[sms.price_per_part]\ndefault = 0.02\n')
    settings = load_settings(config, {"CANHBAO_SMS__MAX_PARTS": "7"})
    assert settings.sms.max_parts == 7
    assert settings.sms.currency == "USD"
    assert settings.sms.price_per_part == {"default": 0.02}


def test_the_config_file_can_be_named_in_the_environment(tmp_path: Path) -> None:
    """CANHBAO_CONFIG points at the file to read when no path is given."""
    path = write(tmp_path / "elsewhere.toml", '[logging]\nformat = "json"\n')
    assert load_settings(environ={"CANHBAO_CONFIG": str(path)}).logging.format == "json"


def test_an_explicit_environ_replaces_the_process_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings reads only the environ it is given and leaves os.environ as it found it."""
    monkeypatch.setenv("CANHBAO_SMS__MAX_PARTS", "9")
    write(config, "")
    assert load_settings(config, {}).sms.max_parts == 4
    assert load_settings(config, {"CANHBAO_SMS__MAX_PARTS": "5"}).sms.max_parts == 5
    assert os.environ["CANHBAO_SMS__MAX_PARTS"] == "9"


def test_the_repository_config_loads_cleanly() -> None:
    """The config.toml shipped in the repository is valid and says what it means."""
    settings = load_settings(REPOSITORY_CONFIG, {})
    assert settings.app.timezone == "Asia/Ho_Chi_Minh"
    assert settings.sms.max_parts == 4
    assert settings.sms.price_for("viettel") == 700
    assert settings.sms.price_for("gmobile") == 650


# -- errors that say what to fix --------------------------------------------------------------


def test_an_unknown_key_in_the_file_is_an_error(config: Path) -> None:
    """A typo such as max_partz is named with its section and file, never silently ignored."""
    message = error_of(write(config, "[sms]\nmax_partz = 3\n"))
    assert "'sms.max_partz'" in message
    assert str(config) in message
    assert "không có khoá này" in message


def test_an_unknown_section_is_an_error(config: Path) -> None:
    """A whole unknown [section] is refused."""
    message = error_of(write(config, "[smss]\nmax_parts = 3\n"))
    assert "'smss'" in message
    assert str(config) in message


def test_a_wrong_type_in_the_file_is_an_error(config: Path) -> None:
    """A string where a number belongs is named, with its file and the type expected."""
    message = error_of(write(config, '[sms]\nmax_parts = "many"\n'))
    assert "'sms.max_parts'" in message
    assert str(config) in message
    assert "cần một số nguyên" in message
    assert "'many'" in message


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("[sms]\nmax_parts = 30\n", "sms.max_parts", "≤ 10"),
        ("[sms]\nmax_parts = 0\n", "sms.max_parts", "≥ 1"),
        ('[logging]\nformat = "xml"\n', "logging.format", "'json'"),
        ('[database]\nurl = "mysql://x"\n', "database.url", "postgresql+psycopg://"),
        ('[app]\ntimezone = "Asia/Hanoi_City"\n', "app.timezone", "Asia/Hanoi_City"),
        ("[sms.price_per_part]\ndefault = -1\n", "sms.price_per_part", "không được âm"),
        ("[policy]\nurgent_share = 1\n", "policy.urgent_share", "cần nhỏ hơn 1"),
        ("[dispatch]\nlease_seconds = 0\n", "dispatch.lease_seconds", "cần lớn hơn 0"),
        ("[dispatch]\nbatch_size = 1.5\n", "dispatch.batch_size", "cần một số nguyên (không có phần lẻ)"),
        ("[gateways.simulator]\nreport_delay_ms = [1]\n", "gateways.simulator.report_delay_ms.1", "thiếu"),
        ("[policy]\nquiet_hours = []\n", "policy.quiet_hours", "cần một bảng"),
    ],
    ids=[
        "above-max",
        "below-min",
        "not-a-choice",
        "unsupported-database",
        "unknown-timezone",
        "negative-price",
        "not-below",
        "not-above",
        "fraction",
        "short-tuple",
        "list-for-table",
    ],  # fmt: skip
)
def test_a_wrong_value_in_the_file_is_an_error(config: Path, toml: str, key: str, expected: str) -> None:
    """A value of the right type but out of range is named with its file and what was allowed, in Vietnamese."""
    message = error_of(write(config, toml))
    assert f"'{key}'" in message
    assert str(config) in message
    assert expected in message
    assert "Input should" not in message and "Field required" not in message


def test_a_price_table_without_a_default_price_is_an_error(config: Path) -> None:
    """A [sms.price_per_part] table must set its own default, not inherit 650 VND whatever the currency."""
    message = error_of(write(config, '[sms]\ncurrency = "USD"\n[sms.price_per_part]\nviettel = 0.03\n'))
    assert "'sms.price_per_part'" in message
    assert "'default'" in message


@pytest.mark.parametrize(
    ("toml", "environ", "key", "origin"),
    [
        ("[gateways.file]\nrate = nan\n", {}, "gateways.file.rate", "tệp"),
        ("[sms.price_per_part]\ndefault = inf\n", {}, "sms.price_per_part.default", "tệp"),
        ("", {"CANHBAO_POLICY__ASSUMED_RATE": "inf"}, "policy.assumed_rate", "CANHBAO_POLICY__ASSUMED_RATE"),
        ("", {"CANHBAO_DISPATCH__LEASE_SECONDS": "NaN"}, "dispatch.lease_seconds", "CANHBAO_DISPATCH__LEASE_SECONDS"),
        ("", {"CANHBAO_ZALO": '{"price": "-Infinity"}'}, "zalo.price", "CANHBAO_ZALO"),
    ],
    ids=["file-nan-rate", "file-inf-price", "env-inf", "env-nan", "section-variable"],
)
def test_a_non_finite_number_is_an_error(
    config: Path, toml: str, environ: dict[str, str], key: str, origin: str
) -> None:
    """nan and inf, which TOML and float() both read, are refused for every number, naming the key and its source."""
    message = error_of(write(config, toml), environ)
    assert f"'{key}'" in message
    assert origin in message
    assert "cần một số hữu hạn" in message


def test_the_zalo_price_is_read_per_message(config: Path) -> None:
    """[zalo] price is what one Zalo message costs; without it a default price stands."""
    assert load_settings(write(config, "[zalo]\nprice = 220\n"), {}).zalo.price == 220
    assert load_settings(write(config, ""), {}).zalo.price > 0


def test_a_wrong_value_from_the_environment_names_the_variable(config: Path) -> None:
    """When the bad value came from CANHBAO_SMS__MAX_PARTS, the message names that variable, not the file."""
    message = error_of(write(config, "[sms]\nmax_parts = 3\n"), {"CANHBAO_SMS__MAX_PARTS": "lots"})
    assert "'sms.max_parts'" in message
    assert "CANHBAO_SMS__MAX_PARTS" in message
    assert str(config) not in message
    assert "cần một số nguyên" in message


def test_an_unknown_key_from_the_environment_names_the_variable(config: Path) -> None:
    """A misspelt CANHBAO_ variable is refused and named."""
    message = error_of(write(config, ""), {"CANHBAO_SMS__MAX_PARTZ": "3"})
    assert "'sms.max_partz'" in message
    assert "CANHBAO_SMS__MAX_PARTZ" in message


def test_every_error_is_reported_at_once(config: Path) -> None:
    """Two mistakes give two lines, so the operator fixes both in one go."""
    message = error_of(write(config, '[sms]\nmax_parts = "x"\n[logging]\nlevel = "loud"\n'))
    assert len(message.splitlines()) == 2
    assert "'sms.max_parts'" in message
    assert "'logging.level'" in message


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("[sms\nmax_parts = 3\n", "dòng 1, cột 5: thiếu ']' đóng tên bảng"),
        ("[sms]\nmax_parts 3\n", "dòng 2, cột 11: thiếu '=' sau tên khoá"),
        ('[sms]\ncurrency = "VND\n', "dòng 2, cột 16: chuỗi chưa đóng dấu ngoặc kép trước khi hết dòng"),
    ],
    ids=["unclosed-table", "missing-equals", "unclosed-string"],
)
def test_bad_toml_syntax_is_an_error(config: Path, toml: str, where: str) -> None:
    """A file that is not TOML is named, with the line, column and reason in Vietnamese."""
    message = error_of(write(config, toml))
    assert str(config) in message
    assert "TOML" in message
    assert where in message
    assert "line" not in message


def test_a_directory_given_as_the_config_file_says_it_is_a_directory(tmp_path: Path) -> None:
    """`--config somedir` is refused as a directory, not as a missing file or an OS error."""
    message = error_of(tmp_path)
    assert str(tmp_path) in message
    assert "là một thư mục" in message


@pytest.mark.parametrize(
    "variable",
    ["CANHBAO_ROUTES", "CANHBAO_POLICY__QUIET_HOURS", "CANHBAO_GATEWAYS__SIMULATOR__CARRIERS"],
)
def test_bad_json_in_a_variable_is_one_line_naming_it(config: Path, variable: str) -> None:
    """A CANHBAO_ variable holding broken JSON is refused in one Vietnamese line naming that variable."""
    message = error_of(write(config, ""), {variable: "{bad", "CANHBAO_SMS__MAX_PARTS": "3"})
    assert message.splitlines() == [message]
    assert message.startswith(f"Biến môi trường {variable}: không phải JSON hợp lệ (cột 2")
    assert "tên khoá cần dấu ngoặc kép" in message


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    """A file named on the command line must exist."""
    missing = tmp_path / "nope.toml"
    assert str(missing) in error_of(missing)


def test_a_missing_config_file_named_in_the_environment_is_an_error(tmp_path: Path) -> None:
    """A file named by CANHBAO_CONFIG must exist too: a typo must not start the defaults."""
    missing = tmp_path / "nope.toml"
    assert str(missing) in error_of(None, {"CANHBAO_CONFIG": str(missing)})


def test_a_wrong_value_in_a_section_variable_names_that_variable(config: Path) -> None:
    """A bad value set through a whole-section variable (CANHBAO_SMS='{…}') names that variable."""
    message = error_of(write(config, ""), {"CANHBAO_SMS": '{"max_parts": "x"}'})
    assert "CANHBAO_SMS" in message
    assert str(config) not in message


# -- secrets ----------------------------------------------------------------------------------


def test_a_secret_in_the_file_is_refused(config: Path) -> None:
    """gateways.twilio.auth_token in the file is an error telling where it belongs."""
    message = error_of(write(config, '[gateways.twilio]\naccount_sid = "AC1"\nauth_token = "s3cret"\n'))
    assert "'gateways.twilio.auth_token'" in message
    assert str(config) in message
    assert "CANHBAO_GATEWAYS__TWILIO__AUTH_TOKEN" in message
    assert "s3cret" not in message


def test_a_secret_from_the_environment_is_hidden(config: Path) -> None:
    """The token from CANHBAO_GATEWAYS__TWILIO__AUTH_TOKEN is a SecretStr that repr never shows."""
    write(config, '[gateways.twilio]\naccount_sid = "AC1"\n')
    settings = load_settings(config, {"CANHBAO_GATEWAYS__TWILIO__AUTH_TOKEN": "s3cret"})
    token = settings.gateways.twilio.auth_token
    assert isinstance(token, SecretStr)
    assert token.get_secret_value() == "s3cret"
    assert settings.gateways.twilio.account_sid == "AC1"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)
    assert "s3cret" not in settings.model_dump_json()


# -- named gateways -------------------------------------------------------------------------

VIETTEL_AND_MOBIFONE = """
[gateways.viettel]
kind = "smpp"
host = "10.1.2.3"
system_id = "canhbao"
source_addr = "CONGAN-DN"
window = 10
rate = 100
[gateways.mobifone]
kind = "smpp"
host = "10.4.5.6"
system_id = "canhbao-mb"
[gateways.twilio]
account_sid = "AC1"
[routes]
default = ["file"]
viettel = ["viettel", "twilio"]
mobifone = ["mobifone", "twilio"]
"""


def test_several_gateways_of_one_kind_are_named_sections(config: Path) -> None:
    """One SMPP bind per carrier: each section keeps its own settings and its password from its own variable."""
    environ = {"CANHBAO_GATEWAYS__VIETTEL__PASSWORD": "vt-secret", "CANHBAO_GATEWAYS__MOBIFONE__PORT": "2776"}
    settings = load_settings(write(config, VIETTEL_AND_MOBIFONE), environ)
    viettel, mobifone = settings.gateways.get("viettel"), settings.gateways.get("mobifone")
    assert settings.gateways.names() == ["file", "simulator", "viettel", "mobifone", "twilio"]
    assert (viettel.kind, viettel.host, viettel.rate, viettel.window) == ("smpp", "10.1.2.3", 100, 10)
    assert viettel.password.get_secret_value() == "vt-secret" and mobifone.password is None
    assert (mobifone.host, mobifone.port) == ("10.4.5.6", 2776)
    assert settings.route_for("viettel") == ["viettel", "twilio"]


def test_a_gateways_kind_defaults_to_its_name(config: Path) -> None:
    """`[gateways.twilio]` without a kind is a Twilio gateway; file and simulator keep working as before."""
    settings = load_settings(
        write(config, '[gateways.twilio]\naccount_sid = "AC1"\n[gateways.file]\npath = "o.jsonl"\n')
    )
    assert settings.gateways.get("twilio").kind == "twilio"
    assert settings.gateways.file.path == Path("o.jsonl") and settings.gateways.file.kind == "file"


def test_an_unknown_gateway_kind_names_the_section_and_the_kinds(config: Path) -> None:
    """A section whose name is no kind and that says none is refused, listing the kinds."""
    message = error_of(write(config, '[gateways.vinaphone]\nhost = "10.1.1.1"\n'))
    assert "Cổng 'vinaphone'" in message and "loại cổng không rõ 'vinaphone'" in message
    assert "file | simulator | smpp | twilio | zalo" in message and str(config) in message


def test_a_key_the_kind_does_not_know_names_the_close_one(config: Path) -> None:
    """A misspelt SMPP key is refused naming the key, the file and what was meant."""
    message = error_of(write(config, '[gateways.viettel]\nkind = "smpp"\nhostt = "10.1.2.3"\n'))
    assert "'gateways.viettel.hostt'" in message and str(config) in message
    assert "cổng loại 'smpp' không có khoá này (có phải 'host'?)" in message


@pytest.mark.parametrize(
    ("section", "key"),
    [("viettel", "password"), ("twilio", "auth_token"), ("zalo", "app_secret"), ("zalo", "refresh_token"),
     ("zalo", "webhook_secret"), ("twilio", "webhook_shared_key")],
)  # fmt: skip
def test_a_secret_of_any_gateway_in_the_file_is_refused(config: Path, section: str, key: str) -> None:
    """Passwords and tokens are refused in the file, whatever the gateway, naming the variable to use."""
    kind = "smpp" if section == "viettel" else section
    message = error_of(write(config, f'[gateways.{section}]\nkind = "{kind}"\n{key} = "s3cret"\n'))
    assert f"'gateways.{section}.{key}'" in message
    assert f"CANHBAO_GATEWAYS__{section.upper()}__{key.upper()}" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("where", ["file", "environment"])
def test_a_route_naming_no_gateway_is_refused(config: Path, where: str) -> None:
    """A route to a gateway that has no section is refused at start-up, naming the route and the gateways."""
    if where == "file":
        message = error_of(write(config, '[routes]\ndefault = ["file"]\nviettel = ["viettel"]\n'))
        assert str(config) in message
    else:
        message = error_of(None, {"CANHBAO_ROUTES": '{"default": ["file"], "viettel": ["viettel"]}'})
        assert "CANHBAO_ROUTES" in message
    assert "tuyến 'viettel' nêu cổng không có: viettel" in message
