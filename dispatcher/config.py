"""Deployment settings: `config.toml` overridden by `CANHBAO_…` environment variables.

This module alone reads the configuration, once, in `load_settings`; everything else receives
the `Settings` object (or the part it needs) from the CLI, the composition root.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import tomllib
from datetime import date
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from dispatcher.domain import Audience
from dispatcher.errors import ConfigError, toml_problem

ENV_PREFIX = "CANHBAO_"
ZALO_ROUTE = "zalo"  # the [routes] key of the Zalo channel's gateways (the others are carriers)
DEFAULT_CONFIG_FILE = Path("config.toml")


def _finite(value: Any) -> Any:
    """Refuse nan and inf (TOML and float() read both): as a rate or a price they would mean "no limit"."""
    try:
        number = float(value) if isinstance(value, float | str) else None
    except ValueError:
        return value  # not a number at all: the float validator says so
    if number is not None and not math.isfinite(number):
        raise ValueError("cần một số hữu hạn (không nhận nan hay inf)")
    return value


Finite = Annotated[float, BeforeValidator(_finite)]


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo never passes silently.

    No float of any section takes nan or inf, from the file or the environment (`Finite` says
    so in Vietnamese; `allow_inf_nan` holds for any float declared without it).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AppSettings(Section):
    """Process-wide choices."""

    timezone: str = "Asia/Ho_Chi_Minh"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"múi giờ không tồn tại {value!r}") from exc
        return value


class DatabaseSettings(Section):
    """Where the data lives; SQLite under var/ by default, PostgreSQL at scale."""

    url: str = "sqlite:///var/canhbao.db"
    busy_timeout_ms: int = Field(30_000, ge=0)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _supported_url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("cần địa chỉ dạng sqlite:///… hoặc postgresql+psycopg://…")
        return value


class SmsSettings(Section):
    """SMS text limits and prices (VND per part, per carrier)."""

    max_parts: int = Field(4, ge=1, le=10)
    currency: str = "VND"
    price_per_part: dict[str, Finite] = Field(default_factory=lambda: {"default": 650.0})

    @field_validator("price_per_part")
    @classmethod
    def _has_default_price(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("cần giá 'default' cho các nhà mạng không ghi riêng")
        if any(price < 0 for price in value.values()):
            raise ValueError("giá không được âm")
        return value

    def price_for(self, carrier: str) -> float:
        """Price of one part on `carrier`, falling back to the default price."""
        return self.price_per_part.get(carrier, self.price_per_part["default"])


class ZaloSettings(Section):
    """The Zalo channel (ZBS template messages, ex-ZNS): what one costs.

    Zalo bills per message, whatever its length, at the template's own price (`price_sdt` of
    `GET /template/info/v2` when sent by phone number): set yours here.
    """

    price: Finite = Field(300.0, ge=0, description="VND per Zalo template message sent by phone number")


class SubscriberSettings(Section):
    """Subscriber imports and the synthetic population."""

    rejects_dir: Path = Path("var/rejects")
    batch_size: int = Field(20_000, ge=100)
    default_audiences: list[str] = Field(default_factory=lambda: ["public"])
    default_channels: list[str] = Field(default_factory=lambda: ["sms"])


class CatalogueSettings(Section):
    """The alert catalogue and the methods police may add to the built-in taxonomy."""

    messages_dir: Path = Path("messages")
    extra_methods: dict[str, str] = Field(default_factory=dict)


class LoggingSettings(Section):
    """Log format: `auto` is pretty in a terminal and JSON otherwise."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewayLimits(Section):
    """What every gateway shares: its kind, its rate limit and how many sends it runs at once."""

    kind: str = Field("", description="file | simulator | smpp | twilio | zalo; defaults to the section's name")
    rate: Finite = Field(0, ge=0, description="messages per second; 0 is unlimited")
    parts_rate: Finite = Field(0, ge=0, description="SMS parts per second; 0 is unlimited")
    concurrency: int = Field(16, ge=1, le=10_000)
    circuit_errors: int = Field(20, ge=0, description="errors in the window that take the gateway out; 0: never")
    circuit_error_share: Finite = Field(0.5, ge=0, le=1, description="…and the least share of its sends they are")
    circuit_window_seconds: Finite = Field(60, gt=0)
    circuit_cooldown_seconds: Finite = Field(30, gt=0, description="how long it stays out before one batch probes it")
    circuit_probe_messages: int = Field(10, ge=1, description="messages the probe sends")


class FileGatewaySettings(GatewayLimits):
    """The hand-off file: one JSON line per message, a file a carrier can take."""

    kind: Literal["file"] = "file"
    path: Path = Path("var/outbox.jsonl")
    concurrency: int = Field(1, ge=1, le=10_000)


class CarrierBehaviour(Section):
    """How the simulated network of one carrier behaves; unset fields take the simulator's."""

    latency_ms: Finite | None = Field(None, ge=0)
    temporary_failure: Finite | None = Field(None, ge=0, le=1)
    throttled: Finite | None = Field(None, ge=0, le=1)
    permanent_failure: Finite | None = Field(None, ge=0, le=1)
    undeliverable: Finite | None = Field(None, ge=0, le=1)


class SimulatorSettings(GatewayLimits):
    """The carrier simulator: latency, a failure mix and delivery reports that arrive later."""

    kind: Literal["simulator"] = "simulator"
    concurrency: int = Field(64, ge=1, le=10_000)
    seed: int = 1
    latency_ms: Finite = Field(0, ge=0)
    temporary_failure: Finite = Field(0, ge=0, le=1)
    throttled: Finite = Field(0, ge=0, le=1)
    permanent_failure: Finite = Field(0, ge=0, le=1)
    undeliverable: Finite = Field(0, ge=0, le=1)
    not_on_zalo: Finite = Field(0, ge=0, le=1, description="share of numbers Zalo messages cannot reach (-118)")
    zalo_unconfirmed: Finite = Field(
        0, ge=0, le=1, description="share of accepted Zalo messages whose delivery receipt never comes"
    )
    opt_out_replies: Finite = Field(
        0, ge=0, le=1, description="share of people sent an SMS who text back HUY (the same numbers every time)"
    )
    report_delay_ms: tuple[Finite, Finite] = (50, 2000)
    reports: bool = Field(True, description="send delivery reports at all (off: measure sending alone)")
    record_path: Path | None = None
    keep_last: int = Field(20_000, ge=0, description="messages kept in memory for tests to inspect")
    carriers: dict[str, CarrierBehaviour] = Field(default_factory=dict)


class SmppSettings(GatewayLimits):
    """One carrier's SMSC over SMPP 3.4; the password only ever comes from the environment."""

    kind: Literal["smpp"] = "smpp"
    host: str = "127.0.0.1"
    port: int = Field(2775, ge=1, le=65_535)
    system_id: str = ""
    password: SecretStr | None = None
    system_type: str = ""
    source_addr: str = Field("", max_length=11, description="the brandname: an alphanumeric sender (TON 5, NPI 0)")
    bind: Literal["trx", "tx_rx"] = Field("trx", description="one transceiver, or a transmitter and a receiver")
    binds: int = Field(1, ge=1, le=32, description="binds (sessions) this gateway keeps open")
    window: int = Field(10, ge=1, le=1_000, description="submit_sm sent and not yet answered, per bind")
    long_messages: Literal["udh", "sar", "payload"] = "udh"
    enquire_link_seconds: Finite = Field(30, gt=0)
    response_timeout_seconds: Finite = Field(10, gt=0)
    reconnect_max_seconds: Finite = Field(60, gt=0)
    concurrency: int = Field(10, ge=1, le=10_000)


class TwilioSettings(GatewayLimits):
    """Twilio's Messaging API; the auth token only ever comes from the environment."""

    kind: Literal["twilio"] = "twilio"
    account_sid: str = ""
    auth_token: SecretStr | None = None
    messaging_service_sid: str = ""
    from_number: str = ""
    base_url: str = "https://api.twilio.com"
    public_url: str = Field("", description="the address Twilio reaches us at, for status callbacks")
    timeout_seconds: Finite = Field(15, gt=0, description="how long one request to Twilio may take")
    concurrency: int = Field(64, ge=1, le=10_000)
    webhook_shared_key: SecretStr | None = Field(
        None, description="the secret of the SharedKey a Twilio Webhook Setting signs our URLs with (HMAC-SHA256)"
    )
    webhook_shared_key_id: str = Field("", description="that SharedKey's id: a webhook signed with another is refused")


class ZaloGatewaySettings(GatewayLimits):
    """Zalo's ZNS/ZBS template API; the app secret and the first refresh token come from the environment."""

    kind: Literal["zalo"] = "zalo"
    app_id: str = ""
    oa_id: str = ""
    app_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    base_url: str = "https://business.openapi.zalo.me"
    oauth_url: str = "https://oauth.zaloapp.com"
    concurrency: int = Field(64, ge=1, le=10_000)
    timeout_seconds: Finite = Field(10, gt=0, description="for one HTTP call to Zalo")
    refresh_margin_seconds: Finite = Field(
        6 * 3600, ge=0, description="the access token (25 h) is refreshed when less than this is left"
    )
    webhook_secret: SecretStr | None = Field(None, description="the OA secret key of the webhook; else app_secret")
    webhook_signature: str = Field(
        "app_id+body+timestamp+secret",
        description="what X-ZEvent-Signature hashes (SHA-256), joined by '+': app_id, oa_id, body, timestamp, secret",
    )

    @field_validator("webhook_signature")
    @classmethod
    def _signature_terms(cls, value: str) -> str:
        terms = value.split("+")
        known = {"app_id", "oa_id", "body", "timestamp", "secret"}
        if set(terms) - known or not {"body", "secret"} <= set(terms):
            raise ValueError(f"cần các phần {', '.join(sorted(known))} nối bằng '+', có body và secret")
        return value


# The gateway kinds a section may name, and their settings.
GATEWAY_KINDS: dict[str, type[GatewayLimits]] = {
    "file": FileGatewaySettings, "simulator": SimulatorSettings, "smpp": SmppSettings, "twilio": TwilioSettings,
    "zalo": ZaloGatewaySettings,
}  # fmt: skip
GatewaySection = Annotated[
    FileGatewaySettings | SimulatorSettings | SmppSettings | TwilioSettings | ZaloGatewaySettings,
    Field(discriminator="kind"),
]
# Gateways the package itself provides without a section: the tests' stand-in.
BUILT_IN_GATEWAYS = frozenset({"fake"})
# Keys that hold secrets: they may only come from the environment.
SECRET_KEYS = frozenset(
    {"password", "auth_token", "app_secret", "refresh_token", "webhook_secret", "webhook_shared_key"}
)


class GatewaysSettings(Section):
    """The named gateways, `[gateways.<name>]` each, with a `kind` that defaults to the name.

    `file` and `simulator` always exist (with their defaults); any other name is a section of its
    own, so one deployment can hold one SMPP bind per carrier (`[gateways.viettel] kind = "smpp"`).
    """

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, GatewaySection]  # type: ignore[assignment]

    file: FileGatewaySettings = FileGatewaySettings()
    simulator: SimulatorSettings = SimulatorSettings()

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults_to_the_name(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {name: _with_kind(name, section) for name, section in data.items()}

    def names(self) -> list[str]:
        """Every configured gateway's name."""
        return ["file", "simulator", *(self.__pydantic_extra__ or {})]

    def get(self, name: str) -> GatewayLimits | None:
        """The section named `name`, or None."""
        return getattr(self, name, None) if name in self.names() else None

    def items(self) -> list[tuple[str, GatewayLimits]]:
        """(name, section) of every configured gateway."""
        return [(name, getattr(self, name)) for name in self.names()]


def _with_kind(name: str, section: Any) -> Any:
    """A section's data with its kind filled in from its name where it names none."""
    if isinstance(section, dict) and not section.get("kind"):
        return {**section, "kind": name}
    return section


class DispatchSettings(Section):
    """The dispatch loop: batches, leases, retries."""

    batch_size: int = Field(500, ge=1, le=50_000)
    lease_seconds: Finite = Field(60, gt=0)
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_base_seconds: Finite = Field(30, ge=0)
    backoff_max_seconds: Finite = Field(3600, ge=0)
    poll_interval_ms: Finite = Field(200, ge=1)
    report_wait_seconds: Finite = Field(
        5, ge=0, description="how long --until-idle waits for outstanding delivery reports"
    )
    receipt_timeout_seconds: Finite = Field(
        600, ge=0, description="a zalo_then_sms message Zalo has not confirmed by then goes by SMS; 0: never"
    )
    already_received_days: int = Field(30, ge=0, description="the same alert is not sent twice within")
    cap_per_day: int = Field(3, ge=1, description="messages per subscriber per 24 h, all blasts")


class PolicySettings(Section):
    """When and how often messages may leave; quiet hours are local time in [app] timezone."""

    quiet_hours: dict[Literal["sms", "zalo"], str] = Field(
        default_factory=lambda: {"sms": "22:00-07:00", "zalo": "22:00-07:00"},
        description="per channel 'HH:MM-HH:MM' in which nothing leaves (messages wait); '' for none",
    )
    urgent_in_quiet_hours: bool = Field(False, description="urgent alerts may go out inside quiet hours")
    capped: Literal["defer", "skip"] = Field(
        "defer", description="people at cap_per_day: 'defer' sends them a day later, 'skip' leaves them out"
    )
    urgent_share: Finite = Field(
        0.8, gt=0, lt=1, description="the part of each batch urgent messages may take while normal ones wait"
    )
    assumed_rate: Finite = Field(100, gt=0, description="messages/s used for the ETA when no limit is set")

    @field_validator("quiet_hours")
    @classmethod
    def _windows(cls, value: dict[str, str]) -> dict[str, str]:
        for channel, window in value.items():
            start, dash, end = window.partition("-")
            if window and not (dash and _is_clock_time(start) and _is_clock_time(end)):
                raise ValueError(f"'{channel}': cần khoảng giờ dạng HH:MM-HH:MM (hoặc \"\"), nhận được {window!r}")
        return {"sms": "", "zalo": "", **value}

    def quiet_window(self, channel: str) -> tuple[str, str]:
        """(start, end) of `channel`'s quiet hours; equal times mean none."""
        start, _, end = (self.quiet_hours.get(channel) or "00:00-00:00").partition("-")
        return start.strip(), end.strip()


def _is_clock_time(value: str) -> bool:
    hours, _, minutes = value.strip().partition(":")
    return hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and int(hours) < 24 and int(minutes) < 60


class SchedulerSettings(Section):
    """The scheduler: one leader among the scheduler processes fires one-off and recurring blasts."""

    schedules_dir: Path = Path("schedules")
    grace_seconds: Finite = Field(
        3600, ge=0, description="a start missed while everything was down still runs within this, else 'missed'"
    )
    lease_seconds: Finite = Field(30, ge=2, description="how long a leader holds the lease without renewing it")
    reconcile_seconds: Finite = Field(5, gt=0, description="how often the leader re-reads blasts and schedules")


class WebSettings(Section):
    """The console and the API: sessions, lock-out, cookies."""

    secure_cookies: bool = Field(
        True, description="cookies only over HTTPS; false only for plain HTTP on a machine with nothing in front"
    )
    session_idle_minutes: Finite = Field(30, gt=0, description="a session unused this long ends")
    session_hours: Finite = Field(12, gt=0, description="a session ends this long after login, used or not")
    lockout_failures: int = Field(5, ge=1, description="failed logins (per name, or per address) before a lock-out")
    lockout_minutes: Finite = Field(
        15, gt=0, description="the window failures are counted in, and the lock-out's length"
    )
    dashboard_seconds: Finite = Field(
        5, ge=0, description="the dashboard is counted once per this many seconds for all who watch (0: per visit)"
    )
    import_max_mb: Finite = Field(50, gt=0, description="an uploaded subscriber file larger than this is refused (413)")
    import_wait_seconds: Finite = Field(
        3, ge=0, description="an upload's import answers at once within this; longer, it is followed on its own page"
    )
    workers: int = Field(
        1, ge=1, description="`canhbao web` processes serving the port together (one core each); `--workers` overrides"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of our reverse proxies: only their X-Forwarded-For is believed",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{text!r} không phải địa chỉ IP hay mạng CIDR (ví dụ 10.0.0.5, 10.0.0.0/24)"
                ) from None
        return [text.strip() for text in value]


class MetricsSettings(Section):
    """Where a separate `canhbao worker` offers its own figures to Prometheus."""

    worker_host: str = Field("127.0.0.1", description="the address a worker's metrics listener binds")
    worker_port: int = Field(
        0, ge=0, le=65535, description="a worker serves /metrics on this port (0: none; --metrics-port overrides)"
    )


def month_day(value: str) -> tuple[int, int]:
    """(month, day) of 'MM-DD', a day every year has; ValueError in Vietnamese otherwise."""
    month, _, day = value.strip().partition("-")
    try:
        date(2025, int(month), int(day))  # 2025: not a leap year, so 02-29 is refused
    except ValueError:
        raise ValueError("cần ngày dạng MM-DD (tháng-ngày) có trong mọi năm, ví dụ '06-01' là ngày 1 tháng 6") from None
    return int(month), int(day)


class ReportSettings(Section):
    """Reach reports: coverage targets, retention of delivery rows, the issuing body, when the scheduler prepares,
    rolls up and purges."""

    targets: dict[str, Finite] = Field(
        default_factory=lambda: {
            "public": 50.0,
            "official": 85.0,
            "telecom_staff": 80.0,
            "journalist": 95.0,
            "leader": 95.0,
        },  # fmt: skip
        description="share of each audience to reach; the national scheme's figures (plan 3833/KH-UBND)",
    )
    retention_months: int = Field(24, ge=1, description="delivery rows (with numbers) older than this are purged")
    issuer: str = Field("CÔNG AN TỈNH", description="the issuing body printed at the top of the report")
    recipients: list[str] = Field(
        default_factory=lambda: ["Tiểu ban An toàn, an ninh mạng tỉnh", "Lưu: VT"],
        description="the 'Nơi nhận' block",
    )

    h1_prepare_on: str = Field("06-01", description="MM-DD: the scheduler prepares the 6-month report on this day")
    h1_deadline: str = Field("06-10", description="MM-DD: the 6-month report is due before this day")
    year_prepare_on: str = Field("11-01", description="MM-DD: the scheduler prepares the annual report on this day")
    year_deadline: str = Field("11-10", description="MM-DD: the annual report is due before this day")
    rollup_minutes: Finite = Field(5, ge=0, description="the scheduler rolls deliveries up this often (0: never)")
    purge_at: str = Field("03:00", description="local time of the daily retention purge ('': no scheduled purge)")
    purge_slice_rows: int = Field(
        5000, ge=1, description="deliveries a purge deletes per transaction (the write lock is held that long)"
    )

    @field_validator("h1_prepare_on", "h1_deadline", "year_prepare_on", "year_deadline")
    @classmethod
    def _month_day(cls, value: str, info: ValidationInfo) -> str:
        day = month_day(value)
        if info.field_name.endswith("_deadline"):
            prepare_on = info.data.get(info.field_name.replace("_deadline", "_prepare_on"))
            if prepare_on is not None and month_day(prepare_on) > day:
                raise ValueError(f"hạn nộp phải từ ngày chuẩn bị ({prepare_on}) trở đi")
        return value

    @field_validator("purge_at")
    @classmethod
    def _purge_time(cls, value: str) -> str:
        if value and not _is_clock_time(value):
            raise ValueError("cần giờ dạng HH:MM (ví dụ 03:00), hoặc '' để không xoá theo lịch")
        return value

    @field_validator("targets")
    @classmethod
    def _targets_are_audiences(cls, value: dict[str, float]) -> dict[str, float]:
        known = [a.slug for a in Audience]
        if unknown := sorted(set(value) - set(known)):
            raise ValueError(f"nhóm đối tượng không có: {', '.join(unknown)} (có: {', '.join(known)})")
        if any(not 0 <= share <= 100 for share in value.values()):
            raise ValueError("chỉ tiêu là phần trăm, từ 0 đến 100")
        return value


class Settings(BaseSettings):
    """Everything a deployment can set."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    app: AppSettings = AppSettings()
    database: DatabaseSettings = DatabaseSettings()
    sms: SmsSettings = SmsSettings()
    zalo: ZaloSettings = ZaloSettings()
    subscribers: SubscriberSettings = SubscriberSettings()
    catalogue: CatalogueSettings = CatalogueSettings()
    logging: LoggingSettings = LoggingSettings()
    gateways: GatewaysSettings = GatewaysSettings()
    routes: dict[str, list[str]] = Field(default_factory=lambda: {"default": ["file"]})
    dispatch: DispatchSettings = DispatchSettings()
    policy: PolicySettings = PolicySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    web: WebSettings = WebSettings()
    metrics: MetricsSettings = MetricsSettings()
    reports: ReportSettings = ReportSettings()

    @field_validator("routes")
    @classmethod
    def _routes_name_gateways(cls, value: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        if "default" not in value:
            raise ValueError("cần tuyến 'default' cho các nhà mạng không ghi riêng")
        if any(not gateways for gateways in value.values()):
            raise ValueError("mỗi tuyến cần ít nhất một cổng gửi")
        gateways = info.data.get("gateways")
        known = set(gateways.names() if gateways else ()) | BUILT_IN_GATEWAYS
        for route, names in value.items():
            if unknown := [name for name in names if name not in known]:
                raise ValueError(
                    f"tuyến '{route}' nêu cổng không có: {', '.join(unknown)} (có: {', '.join(sorted(known))}); "
                    "mỗi cổng cần một mục [gateways.<tên>]"
                )
        return value

    def route_for(self, carrier: str, channel: str = "sms") -> list[str]:
        """The ordered gateways a message goes through: by carrier for SMS, `[routes] zalo` for Zalo."""
        if channel != "sms" and ZALO_ROUTE in self.routes:
            return self.routes[ZALO_ROUTE]
        return self.routes.get(carrier, self.routes["default"])

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs (see load_settings), so env wins over it.
        return (env_settings, init_settings)


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read `path` (default ./config.toml, absent is fine) and the environment into Settings.

    Raises ConfigError naming the key, where it came from and what was expected.
    """
    environ = dict(os.environ if environ is None else environ)
    explicit = path is not None or f"{ENV_PREFIX}CONFIG" in environ
    path = path or Path(environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE))
    data = _read_toml(path, required=explicit)
    _refuse_file_secrets(data, path)
    saved = _swap_environ(environ)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, environ)) from exc
    except SettingsError as exc:  # a CANHBAO_ variable holding JSON that does not parse
        raise ConfigError(_explain_json(exc, environ)) from exc
    finally:
        _swap_environ(saved)


def _swap_environ(new: dict[str, str]) -> dict[str, str]:
    """Install `new` as the CANHBAO_ part of os.environ and return what was there."""
    old = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for key in old:
        del os.environ[key]
    os.environ.update({k: v for k, v in new.items() if k.startswith(ENV_PREFIX)})
    return old


def _read_toml(path: Path, required: bool) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path} là một thư mục, không phải tệp cấu hình: hãy chỉ tới tệp .toml.")
    if not path.exists():
        if required:
            raise ConfigError(f"Không tìm thấy tệp cấu hình {path}.")
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Tệp cấu hình {path} không đúng cú pháp TOML, {toml_problem(exc)}.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Tệp cấu hình {path} không phải UTF-8 (byte {exc.start}).") from exc
    except OSError as exc:
        raise ConfigError(f"Không đọc được tệp cấu hình {path}: {exc.strerror}.") from exc


def _refuse_file_secrets(data: dict[str, Any], path: Path) -> None:
    """A password or token written in the file is refused: secrets come from the environment only."""
    gateways = data.get("gateways")
    for name, section in (gateways or {}).items() if isinstance(gateways, dict) else ():
        for key in sorted(SECRET_KEYS & set(section if isinstance(section, dict) else ())):
            env = f"{ENV_PREFIX}GATEWAYS__{name.upper()}__{key.upper()}"
            raise ConfigError(
                f"Khoá bí mật 'gateways.{name}.{key}' không được ghi trong {path}: hãy đặt biến môi trường {env}."
            )


def _explain(exc: ValidationError, path: Path, environ: dict[str, str]) -> str:
    lines = []
    for error in exc.errors():
        keys = _config_keys(error["loc"])
        dotted = ".".join(keys)
        # The value may come from the key's own variable or from one naming a whole section.
        candidates = [ENV_PREFIX + "__".join(k.upper() for k in keys[:n]) for n in range(len(keys), 0, -1)]
        env = next((name for name in candidates if name in environ), None)
        origin = f"biến môi trường {env}" if env else f"tệp {path}"
        if error["type"] == "extra_forbidden":
            lines.append(f"Khoá cấu hình '{dotted}' không hợp lệ ({origin}): {_unknown_key(error['loc'])}.")
        elif error["type"] == "union_tag_invalid":
            kind = (error.get("ctx") or {}).get("tag", error["input"])
            lines.append(f"Cổng '{dotted.removeprefix('gateways.')}' ({origin}): loại cổng không rõ '{kind}' "
                         f"(kind = {' | '.join(GATEWAY_KINDS)}; mặc định là tên mục).")  # fmt: skip
        elif error["type"] == "missing":
            lines.append(f"Khoá cấu hình '{dotted}' ({origin}): thiếu, cần ghi giá trị.")
        else:
            lines.append(f"Khoá cấu hình '{dotted}' ({origin}): {expected(error)}, nhận được {error['input']!r}.")
    return "\n".join(lines)


def _config_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys of an error's location as the file writes them: a gateway's kind tag is not one."""
    keys = [str(part) for part in loc]
    if len(keys) > 2 and keys[0] == "gateways" and keys[2] in GATEWAY_KINDS:
        del keys[2]
    return keys


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """'không có khoá này', naming the gateway kind and the closest known keys where there is one."""
    parts = [str(part) for part in loc]
    if len(parts) < 4 or parts[0] != "gateways" or parts[2] not in GATEWAY_KINDS:
        return "không có khoá này"
    known = sorted(GATEWAY_KINDS[parts[2]].model_fields)
    close = get_close_matches(parts[-1], known, n=1)
    hint = f" (có phải '{close[0]}'?)" if close else f" (có: {', '.join(known)})"
    return f"cổng loại '{parts[2]}' không có khoá này{hint}"


def _explain_json(exc: SettingsError, environ: dict[str, str]) -> str:
    """Which CANHBAO_ variable holds JSON that does not parse; pydantic-settings names only the section."""
    field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else ""
    prefix = ENV_PREFIX + field.upper()
    named = sorted(k for k in environ if k == prefix or k.startswith(prefix + "__"))
    lines = [f"Biến môi trường {name}: {problem}." for name in named if (problem := _json_problem(environ[name]))]
    return "\n".join(lines) or f"Biến môi trường {prefix}…: giá trị JSON không hợp lệ."


# What json says, in Vietnamese.
_JSON_PROBLEMS = {
    "Expecting value": "thiếu giá trị",
    "Expecting property name enclosed in double quotes": "tên khoá cần dấu ngoặc kép",
    "Expecting ',' delimiter": "thiếu dấu ','",
    "Expecting ':' delimiter": "thiếu dấu ':'",
    "Unterminated string starting at": "chuỗi chưa đóng dấu ngoặc kép",
    "Extra data": "còn thừa ký tự sau giá trị",
    "Invalid control character at": "ký tự điều khiển trong chuỗi",
}


def _json_problem(value: str) -> str | None:
    """Why `value` is not the JSON a section or a list needs, or None when it is fine or not JSON at all."""
    if value.lstrip()[:1] not in ("{", "["):
        return None
    try:
        json.loads(value)
    except json.JSONDecodeError as exc:
        reason = _JSON_PROBLEMS.get(exc.msg, exc.msg)
        return f"không phải JSON hợp lệ (cột {exc.colno}: {reason}); khoá và chuỗi trong JSON cần dấu ngoặc kép"
    return None


_EXPECTED = {
    "int_parsing": "cần một số nguyên",
    "int_type": "cần một số nguyên",
    "int_from_float": "cần một số nguyên (không có phần lẻ)",
    "float_parsing": "cần một số",
    "float_type": "cần một số",
    "finite_number": "cần một số hữu hạn (không nhận nan, inf)",
    "bool_parsing": "cần true hoặc false",
    "bool_type": "cần true hoặc false",
    "string_type": "cần một chuỗi",
    "dict_type": "cần một bảng",
    "model_type": "cần một bảng [mục]",
    "model_attributes_type": "cần một bảng [mục]",
    "list_type": "cần một danh sách",
    "tuple_type": "cần một danh sách",
    "set_type": "cần một danh sách",
    "path_type": "cần một đường dẫn tệp",
    "datetime_type": "cần một thời điểm",
    "datetime_parsing": "cần một thời điểm (dạng 2026-12-01 09:00)",
    "datetime_from_date_parsing": "cần một thời điểm (dạng 2026-12-01 09:00)",
    "date_parsing": "cần một ngày (dạng 2026-12-01)",
    "time_parsing": "cần một giờ (dạng 09:00)",
    "url_parsing": "cần một địa chỉ URL",
    "url_scheme": "địa chỉ URL có giao thức không được nhận",
    "json_invalid": "cần JSON hợp lệ",
    "missing": "thiếu giá trị",
    "none_required": "không được ghi giá trị",
    "is_instance_of": "kiểu giá trị không đúng",
}


def expected(error: Any) -> str:
    """What a value needed, in Vietnamese, for pydantic's common error types (the CLI's options too)."""
    ctx = error.get("ctx") or {}
    kind = error["type"]
    bounds = {
        "greater_than": "cần lớn hơn {gt} (> {gt})",
        "greater_than_equal": "cần từ {ge} trở lên (≥ {ge})",
        "less_than": "cần nhỏ hơn {lt} (< {lt})",
        "less_than_equal": "cần không quá {le} (≤ {le})",
        "multiple_of": "cần là bội số của {multiple_of}",
        "string_too_short": "cần ít nhất {min_length} ký tự",
        "string_too_long": "tối đa {max_length} ký tự",
        "string_pattern_mismatch": "cần khớp mẫu {pattern}",
        "too_short": "cần ít nhất {min_length} phần tử",
        "too_long": "tối đa {max_length} phần tử",
    }
    if kind in bounds:
        return bounds[kind].format(**ctx)
    if kind in ("literal_error", "enum"):
        return f"cần một trong {str(ctx.get('expected')).replace(' or ', ' hoặc ')}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    return _EXPECTED.get(kind, f"giá trị không hợp lệ ({kind})")
