"""The alert catalogue: one TOML file per alert in messages/, versioned in the database.

A file is checked before anything is stored: known method and audiences, a source, declared
variables, a không-dấu rendering that is pure GSM-7, and no more parts than configured. Sync
stores a new version when the content changed and keeps the old one for history. Approval needs
a second person: nobody approves what they wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from difflib import SequenceMatcher, get_close_matches
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, func, insert, select, update

from dispatcher import labels, smstext
from dispatcher.audit import audit
from dispatcher.config import Settings, SmsSettings
from dispatcher.db import compare_and_set
from dispatcher.domain import METHODS, AlertStatus, Audience, Priority, fold
from dispatcher.errors import InputRejected, NotAllowed, NotFound, StateError, UsageError, toml_problem
from dispatcher.models import alert_rejections, alerts

log = structlog.get_logger(__name__)

# Variables the dispatcher fills per recipient, with their longest value: part counts are
# computed for the worst case (tests/test_alerts.py checks these against the region data).
BUILTIN_VARIABLES = {
    "ten_tinh": "Thành phố Hồ Chí Minh",
    "ten_xa": "Phường Văn Miếu - Quốc Tử Giám",
}
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,78}[a-z0-9]$")
# Ids that are words of the console's addresses (`/alerts/new` is the new-alert form): an alert
# so named could never be opened there.
RESERVED_IDS = frozenset({"new", "preview"})
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
KNOWN_KEYS = {
    "id", "method", "title", "body", "body_ascii", "variables", "audiences", "priority",
    "valid_days", "source", "zalo", "author",
}  # fmt: skip
ZALO_KEYS = ("template_id", "params")
# What a [zalo] param may take besides the variables: fields of the alert itself.
ZALO_FIELDS = {"title", "body", "source"}
ZALO_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")
TITLE_LENGTH = 200  # the column's width
MISSING = {"source": "thiếu nguồn chính thức (văn bản, cơ quan ban hành)"}
# A rejection's reason is for the author to act on: a word or two at least, a paragraph at most.
REASON_LENGTH = (5, 1000)
# A person edits only what is not under review nor in use: a draft, or what an approver sent back.
EDITABLE = ("draft", "rejected")


@dataclass(frozen=True)
class AlertSpec:
    """The content of one alert, as written in its catalogue file."""

    id: str
    method: str
    title: str
    body: str
    source: str
    body_ascii: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    audiences: tuple[str, ...] = ("public",)
    priority: str = Priority.NORMAL.value
    valid_days: int = 180
    zalo: dict[str, Any] | None = None
    author: str | None = None

    def content_hash(self) -> str:
        """A fingerprint of everything a recipient or approver sees; the author is not content."""
        content = {k: v for k, v in asdict(self).items() if k != "author"}
        return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Rendering:
    """One way an alert travels: the text and what it costs."""

    text: str
    info: smstext.TextInfo

    def to_json(self) -> dict[str, object]:
        """Encoding, characters, units and parts, with the text."""
        return {
            "text": self.text,
            "encoding": str(self.info.encoding),
            "characters": self.info.characters,
            "units": self.info.units,
            "parts": self.info.parts,
        }


@dataclass(frozen=True)
class Renderings:
    """The Vietnamese (diacritics) and không-dấu renderings, measured for the longest values."""

    unicode: Rendering
    ascii: Rendering


@dataclass(frozen=True)
class Catalogue:
    """What a valid alert may refer to."""

    methods: dict[str, str]
    max_parts: int


def catalogue_for(settings: Settings) -> Catalogue:
    """The methods (built in and the deployment's own) and the part limit alerts are checked against."""
    return Catalogue(methods={**METHODS, **settings.catalogue.extra_methods}, max_parts=settings.sms.max_parts)


@dataclass(frozen=True)
class Cost:
    """What one message of an alert costs on one carrier, in each rendering."""

    carrier: str
    per_part: float
    unicode: float
    ascii: float


def costs(renderings: Renderings, sms: SmsSettings) -> list[Cost]:
    """The cost per carrier of the price table, the 'default' row (other carriers) last."""
    prices = sorted(sms.price_per_part.items(), key=lambda kv: kv[0] == "default")
    return [Cost(carrier, price, price * renderings.unicode.info.parts, price * renderings.ascii.info.parts)
            for carrier, price in prices]  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an alert: the key it is about (empty for the whole file) and what is wrong."""

    key: str
    text: str

    def __str__(self) -> str:
        return f"'{self.key}': {self.text}" if self.key else self.text


class AlertRejected(InputRejected):
    """An alert refused with every problem it has, one a line, each naming the file and the key."""

    def __init__(self, origin: str, problems: list[Problem]) -> None:
        super().__init__("\n".join(f"{origin}: {problem}" for problem in problems))
        self.origin = origin
        self.problems = problems


def parse_spec(text: str, origin: str) -> AlertSpec:
    """An AlertSpec from TOML text, or AlertRejected naming `origin` and every problem of its keys."""
    spec, problems = read_spec(text)
    if spec is None or problems:
        raise AlertRejected(origin, problems)
    return spec


def read_spec(text: str) -> tuple[AlertSpec | None, list[Problem]]:
    """The AlertSpec of a catalogue file as far as it can be read, and the problems of its keys."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [Problem("", f"không đúng cú pháp TOML, {toml_problem(exc)}")]
    problems = [Problem(key, f"khoá không có trong mẫu cảnh báo{_close(key, KNOWN_KEYS)}") for key in data
                if key not in KNOWN_KEYS]  # fmt: skip
    texts = {key: _string(data, key, problems, required=True) for key in ("id", "method", "source")}
    texts |= {key: smstext.normalize(_string(data, key, problems, required=True)) for key in ("title", "body")}
    body_ascii = _string(data, "body_ascii", problems, required=False) or None
    spec = AlertSpec(
        **texts, body_ascii=body_ascii, variables=_variables(data, problems), audiences=_audiences(data, problems),
        priority=_string(data, "priority", problems, required=False) or Priority.NORMAL.value,
        valid_days=_valid_days(data, problems), zalo=data.get("zalo"),
        author=_string(data, "author", problems, required=False) or None,
    )  # fmt: skip
    return spec, problems


def _close(word: str, known: Any) -> str:
    close = get_close_matches(word, sorted(known), n=1)
    return f" (gần giống: '{close[0]}')" if close else ""


def _string(data: dict[str, Any], key: str, problems: list[Problem], required: bool) -> str:
    """The stripped text of `key`; a problem when it is not text, or missing while required."""
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        problems.append(Problem(key, f"cần một chuỗi trong ngoặc kép, nhận được {value!r}"))
        return ""
    if required and not (value or "").strip():
        problems.append(Problem(key, MISSING.get(key, "thiếu")))
    return (value or "").strip()


def missing(spec: AlertSpec) -> list[Problem]:
    """The texts `spec` leaves empty (a form's fields; a file's keys are checked as it is read)."""
    return [Problem(key, MISSING.get(key, "thiếu")) for key in ("title", "body", "source") if not getattr(spec, key)]


def _variables(data: dict[str, Any], problems: list[Problem]) -> dict[str, str]:
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        problems.append(Problem("variables", "cần một bảng [variables] tên = giá trị mặc định"))
        return {}
    for name, value in variables.items():
        if not isinstance(value, str):
            problems.append(Problem(f"variables.{name}", f"giá trị mặc định cần là chuỗi, nhận được {value!r}"))
    return {k: smstext.normalize(v) for k, v in variables.items() if isinstance(v, str)}


def _audiences(data: dict[str, Any], problems: list[Problem]) -> tuple[str, ...]:
    audiences = data.get("audiences", ["public"])
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        problems.append(Problem("audiences", f'cần một danh sách chuỗi, ví dụ ["public"], nhận được {audiences!r}'))
        return ("public",)
    return tuple(audiences)


def _valid_days(data: dict[str, Any], problems: list[Problem]) -> int:
    valid_days = data.get("valid_days", 180)
    if not isinstance(valid_days, int) or isinstance(valid_days, bool) or not 1 <= valid_days <= 3650:
        problems.append(Problem("valid_days", f"cần số ngày (số nguyên) từ 1 đến 3650, nhận được {valid_days!r}"))
        return 180
    return valid_days


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each {name} replaced by its value (unknown names stay as written)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def render(spec: AlertSpec) -> Renderings:
    """Both renderings with the longest possible values, as the validator and `alerts show` count them."""
    values = {**BUILTIN_VARIABLES, **spec.variables}
    unicode_text = fill(spec.body, values)
    ascii_template = spec.body_ascii if spec.body_ascii is not None else smstext.to_ascii(spec.body)
    ascii_text = fill(ascii_template, {k: smstext.to_ascii(v) for k, v in values.items()})
    return Renderings(
        Rendering(unicode_text, smstext.measure(unicode_text)),
        Rendering(ascii_text, smstext.measure(ascii_text)),
    )


@dataclass
class MessageTemplate:
    """An alert's text for one encoding choice, rendered per recipient region (cached by region)."""

    body: str
    variables: dict[str, str]
    ascii: bool
    zalo_block: dict[str, Any] | None = None
    fields: dict[str, str] = field(default_factory=dict)  # what a [zalo] param may name besides variables
    _cache: dict[tuple[int, int | None], tuple[str, smstext.TextInfo]] = field(default_factory=dict)
    _zalo_cache: dict[tuple[int, int | None], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, alert_row: dict[str, Any], encoding: str) -> MessageTemplate:
        """'ascii' sends không dấu; 'auto' too once a person reviewed that rendering; else diacritics."""
        ascii_ = encoding == "ascii" or (encoding == "auto" and bool(alert_row["body_ascii_reviewed"]))
        fields = {name: str(alert_row.get(name) or "") for name in ZALO_FIELDS}
        body = alert_row["body_ascii"] if ascii_ else alert_row["body"]
        return cls(body, dict(alert_row["variables"]), ascii_, alert_row.get("zalo"), fields)

    def zalo(self, regions: Any, province: int, commune: int | None) -> dict[str, Any] | None:
        """The alert's Zalo template and its data for a recipient of `province` / `commune` (None without [zalo]).

        With diacritics whatever the SMS encoding: Zalo's templates are accented Vietnamese.
        """
        if not self.zalo_block:
            return None
        key = (province, commune)
        if key not in self._zalo_cache:
            ten_tinh = regions.province(province).name
            values = {**self.fields, **self.variables, "ten_tinh": ten_tinh,
                      "ten_xa": regions.commune(commune).name if commune else ten_tinh}  # fmt: skip
            values["body"] = smstext.normalize(fill(self.fields.get("body", ""), values))
            data = {name: values.get(source, "") for name, source in self.zalo_block.get("params", {}).items()}
            self._zalo_cache[key] = {"template_id": str(self.zalo_block["template_id"]), "template_data": data}
        return self._zalo_cache[key]

    def render(self, regions: Any, province: int, commune: int | None) -> tuple[str, smstext.TextInfo]:
        """The text a recipient of `province` / `commune` gets, and what it costs."""
        key = (province, commune)
        if key not in self._cache:
            ten_tinh = regions.province(province).name
            ten_xa = regions.commune(commune).name if commune else ten_tinh
            values = {**self.variables, "ten_tinh": ten_tinh, "ten_xa": ten_xa}
            if self.ascii:
                values = {k: smstext.to_ascii(v) for k, v in values.items()}
            rendered = smstext.normalize(fill(self.body, values))
            self._cache[key] = (rendered, smstext.measure(rendered))
        return self._cache[key]


def check(spec: AlertSpec, catalogue: Catalogue, origin: str) -> Renderings:
    """The renderings of a valid alert, or AlertRejected listing every problem."""
    problems = problems_of(spec, catalogue)
    if problems:
        raise AlertRejected(origin, problems)
    return render(spec)


def problems_of(spec: AlertSpec, catalogue: Catalogue) -> list[Problem]:
    """Everything wrong with the content of `spec`, in the order of its keys."""
    return (
        _check_fields(spec, catalogue)
        + _check_placeholders(spec)
        + _check_renderings(spec, catalogue)
        + (_check_zalo(spec) if spec.zalo is not None else [])
    )


def _check_fields(spec: AlertSpec, catalogue: Catalogue) -> list[Problem]:
    problems = []
    if not SLUG.match(spec.id):
        problems.append(Problem("id", f"'{spec.id}' phải gồm chữ thường không dấu, số và '-' (3–80 ký tự)"))
    elif spec.id in RESERVED_IDS:
        problems.append(Problem("id", f"'{spec.id}' là từ dành riêng của bảng điều khiển, hãy chọn mã khác"))
    if len(spec.title) > TITLE_LENGTH:
        problems.append(Problem("title", f"dài {len(spec.title)} ký tự, tối đa {TITLE_LENGTH}"))
    if not 1 <= spec.valid_days <= 3650:
        problems.append(Problem("valid_days", f"cần số ngày (số nguyên) từ 1 đến 3650, nhận được {spec.valid_days!r}"))
    if not spec.method:
        problems.append(Problem("method", "chưa chọn phương thức lừa đảo (xem 'canhbao alerts methods')"))
    elif spec.method not in catalogue.methods:
        close, known = _close(spec.method, catalogue.methods), ", ".join(catalogue.methods)
        problems.append(Problem("method", f"phương thức lừa đảo không rõ '{spec.method}'{close} (nhận: {known})"))
    for audience in spec.audiences:
        try:
            Audience.parse(audience)
        except ValueError:
            known = ", ".join(a.slug for a in Audience)
            problems.append(Problem("audiences", f"nhóm đối tượng không rõ '{audience}' (nhận: {known})"))
    if not spec.audiences:
        problems.append(Problem("audiences", "cần ít nhất một nhóm đối tượng"))
    if spec.priority not in {p.value for p in Priority}:
        problems.append(
            Problem("priority", f"mức ưu tiên '{spec.priority}' phải là normal (thường) hoặc urgent (khẩn)")
        )
    return problems


def _check_placeholders(spec: AlertSpec) -> list[Problem]:
    problems = []
    known = BUILTIN_VARIABLES.keys() | spec.variables.keys()
    texts = [("body", spec.body)] + ([("body_ascii", spec.body_ascii)] if spec.body_ascii is not None else [])
    for where, text in texts:
        for name in PLACEHOLDER.findall(text):
            if name not in known:
                problems.append(Problem(where, f"biến không khai báo {{{name}}}{_close(name, known)}"))
        if "{" in PLACEHOLDER.sub("", text) or "}" in PLACEHOLDER.sub("", text):
            problems.append(Problem(where, "dấu ngoặc nhọn lẻ"))
    for name, value in spec.variables.items():
        if not value.strip():
            problems.append(Problem(f"variables.{name}", f"biến '{name}' thiếu giá trị mặc định"))
        if name in BUILTIN_VARIABLES:
            problems.append(Problem(f"variables.{name}", f"biến '{name}' do hệ thống điền, không khai báo lại"))
    if spec.body_ascii is not None and set(PLACEHOLDER.findall(spec.body_ascii)) != set(PLACEHOLDER.findall(spec.body)):
        problems.append(Problem("body_ascii", "body_ascii phải dùng đúng các biến của body"))
    return problems


def _check_renderings(spec: AlertSpec, catalogue: Catalogue) -> list[Problem]:
    renderings = render(spec)
    ascii_key = "body_ascii" if spec.body_ascii is not None else "body"
    problems = []
    if renderings.ascii.info.encoding is not smstext.Encoding.GSM7:
        bad = "".join(smstext.non_gsm_characters(renderings.ascii.text))
        problems.append(Problem(ascii_key, f"bản không dấu có ký tự ngoài GSM-7: {bad!r}"))
    for key, name, rendering in (("body", "có dấu", renderings.unicode), (ascii_key, "không dấu", renderings.ascii)):
        if rendering.info.parts > catalogue.max_parts:
            problems.append(Problem(key, f"bản {name} dài {rendering.info.parts} phần tin, "
                                         f"quá giới hạn {catalogue.max_parts} phần"))  # fmt: skip
    return problems


def _check_zalo(spec: AlertSpec) -> list[Problem]:
    """[zalo]: an approved template's id, and params naming for each template field the variable or field it takes."""
    zalo = spec.zalo
    if not isinstance(zalo, dict):
        return [Problem("zalo", "cần một bảng [zalo] với template_id và params")]
    problems = [Problem(f"zalo.{key}", f"khoá không có trong [zalo] (nhận: {', '.join(ZALO_KEYS)})")
                for key in zalo if key not in ZALO_KEYS]  # fmt: skip
    template_id = zalo.get("template_id")
    if not isinstance(template_id, str) or not template_id.strip():
        problems.append(Problem("zalo.template_id", 'cần mã mẫu Zalo đã được Zalo duyệt (chuỗi), ví dụ "301245"'))
    params = zalo.get("params")
    if not isinstance(params, dict) or not params:
        example = '{ ten_tinh = "ten_tinh", noi_dung = "title" }'
        return [*problems, Problem("zalo.params", f"cần bảng tham số của mẫu Zalo = nguồn, ví dụ {example}")]
    sources = BUILTIN_VARIABLES.keys() | spec.variables.keys() | ZALO_FIELDS
    for field_name, source in params.items():
        problems += _check_zalo_param(f"zalo.params.{field_name}", field_name, source, sources)
    return problems


def _check_zalo_param(key: str, field_name: str, source: Any, sources: set[str]) -> list[Problem]:
    if not ZALO_PARAM.match(field_name):
        return [Problem(key, "tên tham số Zalo chỉ gồm chữ không dấu, số và '_' (tối đa 50 ký tự)")]
    if not isinstance(source, str) or not source.strip():
        return [Problem(key, "tham số không lấy giá trị từ đâu: cần tên một biến hoặc trường của mẫu (chuỗi)")]
    if source not in sources:
        known = ", ".join(sorted(sources))
        return [Problem(key, f"không có biến hay trường '{source}'{_close(source, sources)} (nhận: {known})")]
    return []


def load_catalogue_dir(directory: Path, catalogue: Catalogue) -> list[tuple[Path, AlertSpec, Renderings]]:
    """Every alert file of `directory`, checked; AlertRejected-style lines list the problems of all files."""
    if not directory.is_dir():
        raise NotFound(f"Không có thư mục mẫu cảnh báo {directory}.")
    loaded, problems, seen = [], [], {}
    for path in sorted(directory.glob("*.toml")):
        try:
            spec = _load_file(path, catalogue, seen)
            loaded.append((path, spec, render(spec)))
        except AlertRejected as exc:
            problems.append(str(exc))
    if problems:
        raise InputRejected("\n".join(problems))
    return loaded


def _load_file(path: Path, catalogue: Catalogue, seen: dict[str, Path]) -> AlertSpec:
    """One catalogue file with every problem it has: its keys', its content's, and its id's."""
    try:
        spec, problems = read_spec(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise AlertRejected(str(path), [Problem("", f"không phải UTF-8 (byte {exc.start})")]) from None
    if spec is not None:
        given = {problem.key.split(".")[0] for problem in problems}  # a key already refused is not checked again
        problems += [p for p in problems_of(spec, catalogue) if p.key.split(".")[0] not in given]
        if spec.id and spec.id != path.stem:
            problems.append(Problem("id", f"'{spec.id}' phải trùng tên tệp '{path.stem}'"))
        elif spec.id in seen:
            problems.append(Problem("id", f"'{spec.id}' đã dùng trong {seen[spec.id]}"))
    if spec is None or problems:
        raise AlertRejected(str(path), problems)
    seen[spec.id] = path
    return spec


# -- the database side --------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    """What `alerts sync` changed, by alert id."""

    added: list[str]
    new_versions: list[str]
    unchanged: list[str]

    def to_json(self) -> dict[str, list[str]]:
        """The document `canhbao alerts sync --json` prints."""
        return {"added": self.added, "new_versions": self.new_versions, "unchanged": self.unchanged}


def latest(conn: Connection, slug: str) -> dict[str, Any] | None:
    """The newest version of alert `slug`, or None."""
    row = (
        conn.execute(select(alerts).where(alerts.c.slug == slug).order_by(alerts.c.version.desc()).limit(1))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def version(conn: Connection, slug: str, number: int | None = None) -> dict[str, Any]:
    """Version `number` of `slug` (the newest when None), or UsageError."""
    if number is None:
        row = latest(conn, slug)
    else:
        found = conn.execute(select(alerts).where(alerts.c.slug == slug, alerts.c.version == number))
        row = (m := found.mappings().first()) and dict(m)
    if not row:
        which = f" phiên bản {number}" if number else ""
        raise NotFound(f"Không có mẫu cảnh báo '{slug}'{which}.")
    return row


def store(conn: Connection, spec: AlertSpec, origin: str, actor: str, now: datetime) -> str:
    """Store `spec` as a new draft version unless the newest version has the same content.

    Returns 'added', 'new_version' or 'unchanged'.
    """
    digest = spec.content_hash()
    current = latest(conn, spec.id)
    if current is not None and current["content_hash"] == digest:
        return "unchanged"
    number = 1 if current is None else current["version"] + 1
    conn.execute(
        insert(alerts).values(
            slug=spec.id, version=number, method=spec.method, title=spec.title, body=spec.body,
            body_ascii=smstext.to_ascii(spec.body) if spec.body_ascii is None else spec.body_ascii,
            body_ascii_reviewed=spec.body_ascii is not None, variables=spec.variables,
            audiences=[Audience.parse(a).slug for a in spec.audiences], priority=spec.priority,
            valid_days=spec.valid_days, source=spec.source, zalo=spec.zalo, content_hash=digest, origin=origin,
            status=AlertStatus.DRAFT.value, author=spec.author or actor, created_at=now,
        )
    )  # fmt: skip
    audit(conn, now, actor, "alert.store", f"alert:{spec.id}", {"version": number, "origin": origin},
          before=None if current is None else {"version": current["version"], "content_hash": current["content_hash"]},
          after={"version": number, "content_hash": digest})  # fmt: skip
    log.info("alert.stored", alert=spec.id, version=number, origin=origin, actor=actor)
    return "added" if current is None else "new_version"


def sync(conn: Connection, loaded: list[tuple[Path, AlertSpec, Renderings]], actor: str, now: datetime) -> SyncResult:
    """Store every loaded catalogue file (see `store`)."""
    result = SyncResult([], [], [])
    buckets = {"added": result.added, "new_version": result.new_versions, "unchanged": result.unchanged}
    for path, spec, _renderings in loaded:
        buckets[store(conn, spec, f"file:{path.name}", actor, now)].append(spec.id)
    return result


def submit(conn: Connection, slug: str, actor: str, now: datetime) -> dict[str, Any]:
    """Offer the newest draft of `slug` for approval."""
    row = version(conn, slug)
    _require(row, AlertStatus.DRAFT, "gửi duyệt")
    _transition(conn, row, AlertStatus.SUBMITTED, submitted_at=now)
    audit(conn, now, actor, "alert.submit", f"alert:{slug}", {"version": row["version"]},
          before={"status": row["status"]}, after={"status": AlertStatus.SUBMITTED.value})  # fmt: skip
    log.info("alert.submitted", alert=slug, version=row["version"], actor=actor)
    return version(conn, slug, row["version"])


def approve(conn: Connection, slug: str, actor: str, now: datetime) -> dict[str, Any]:
    """Approve the submitted version of `slug`; earlier approved versions retire."""
    row = version(conn, slug)
    _require(row, AlertStatus.SUBMITTED, "duyệt")
    _four_eyes(row, actor)
    conn.execute(
        update(alerts)
        .where(alerts.c.slug == slug, alerts.c.status == AlertStatus.APPROVED.value)
        .values(status=AlertStatus.RETIRED.value, retired_at=now)
    )
    _transition(conn, row, AlertStatus.APPROVED, approver=actor, approved_at=now)
    audit(conn, now, actor, "alert.approve", f"alert:{slug}", {"version": row["version"]},
          before={"status": row["status"]}, after={"status": AlertStatus.APPROVED.value})  # fmt: skip
    log.info("alert.approved", alert=slug, version=row["version"], actor=actor)
    return version(conn, slug, row["version"])


def reject(conn: Connection, slug: str, actor: str, reason: str, now: datetime) -> dict[str, Any]:
    """Send the submitted version of `slug` back to its author, saying why (four-eyes, as for approval)."""
    reason = reason.strip()
    least, most = REASON_LENGTH
    if not least <= len(reason) <= most:
        raise UsageError(f"Cần nêu lý do trả lại mẫu '{slug}' (từ {least} đến {most} ký tự), "
                         f"nhận được {len(reason)} ký tự.")  # fmt: skip
    row = version(conn, slug)
    _require(row, AlertStatus.SUBMITTED, "trả lại")
    _four_eyes(row, actor)
    _transition(conn, row, AlertStatus.REJECTED)
    conn.execute(insert(alert_rejections).values(alert_id=row["id"], rejected_by=actor, rejected_at=now, reason=reason))
    audit(conn, now, actor, "alert.reject", f"alert:{slug}", {"version": row["version"], "reason": reason})
    log.info("alert.rejected", alert=slug, version=row["version"], actor=actor)
    return version(conn, slug, row["version"])


def rejections(conn: Connection, slug: str) -> dict[int, dict[str, Any]]:
    """Who sent back which version of `slug`, when and why, by version number."""
    query = (
        select(
            alerts.c.version, alert_rejections.c.rejected_by, alert_rejections.c.rejected_at, alert_rejections.c.reason
        )
        .join(alerts, alerts.c.id == alert_rejections.c.alert_id)
        .where(alerts.c.slug == slug)
    )
    return {row["version"]: dict(row) for row in conn.execute(query).mappings()}


def _four_eyes(row: dict[str, Any], actor: str) -> None:
    """Nobody approves or rejects what they wrote."""
    if fold(row["author"]) == fold(actor):
        raise NotAllowed(
            f"'{actor}' là tác giả của mẫu '{row['slug']}': cần một người khác duyệt (nguyên tắc bốn mắt)."
        )


def retire(conn: Connection, slug: str, actor: str, now: datetime) -> list[int]:
    """Retire every live version of `slug`; returns the version numbers retired."""
    version(conn, slug)
    live = (
        conn.execute(
            select(alerts.c.version).where(alerts.c.slug == slug, alerts.c.status != AlertStatus.RETIRED.value)
        )
        .scalars()
        .all()
    )
    if not live:
        raise StateError(f"Mẫu '{slug}' đã ngừng dùng từ trước.")
    conn.execute(
        update(alerts)
        .where(alerts.c.slug == slug, alerts.c.status != AlertStatus.RETIRED.value)
        .values(status=AlertStatus.RETIRED.value, retired_at=now)
    )
    audit(conn, now, actor, "alert.retire", f"alert:{slug}", {"versions": list(live)},
          before={"live_versions": list(live)}, after={"live_versions": []})  # fmt: skip
    log.info("alert.retired", alert=slug, versions=list(live), actor=actor)
    return list(live)


def create(conn: Connection, spec: AlertSpec, catalogue: Catalogue, messages_dir: Path, actor: str, origin: str,
           now: datetime) -> tuple[dict[str, Any], Renderings, Path]:  # fmt: skip
    """A new alert written by `actor`: checked, stored as a draft, and written to `messages_dir` (reviewed like code).

    Returns the stored row, its renderings and the file written.
    """
    spec = replace(spec, author=actor)
    renderings = check(spec, catalogue, f"mẫu '{spec.id}'")
    path = messages_dir / f"{spec.id}.toml"
    if path.exists():
        raise StateError(f"Đã có tệp {path}: sửa tệp đó rồi chạy 'canhbao alerts sync'.")
    if latest(conn, spec.id) is not None:
        raise StateError(f"Đã có mẫu '{spec.id}' trong cơ sở dữ liệu.")
    store(conn, spec, origin, actor, now)
    _write(path, spec)
    return version(conn, spec.id), renderings, path


def revise(conn: Connection, spec: AlertSpec, catalogue: Catalogue, messages_dir: Path, actor: str, origin: str,
           now: datetime) -> dict[str, Any]:  # fmt: skip
    """A new version of a draft or rejected alert, written by `actor`; its catalogue file is rewritten to match.

    The file follows the database so that the next `alerts sync` finds nothing changed.
    """
    spec = replace(spec, author=actor)
    current = version(conn, spec.id)
    if current["status"] not in EDITABLE:
        raise StateError(f"Chỉ sửa được bản nháp hoặc bản bị trả lại: mẫu '{spec.id}' bản {current['version']} "
                         f"đang '{labels.alert_status(current['status'])}'.")  # fmt: skip
    check(spec, catalogue, f"mẫu '{spec.id}'")
    if store(conn, spec, origin, actor, now) == "unchanged":
        raise StateError(f"Nội dung giống hệt bản {current['version']}: không có gì để lưu.")
    _write(messages_dir / f"{spec.id}.toml", spec)
    return version(conn, spec.id)


def _write(path: Path, spec: AlertSpec) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(spec), encoding="utf-8")


def history(conn: Connection, slug: str) -> list[dict[str, Any]]:
    """Every version of `slug`, newest first; NotFound when there is none."""
    rows = conn.execute(select(alerts).where(alerts.c.slug == slug).order_by(alerts.c.version.desc())).mappings()
    found = [dict(row) for row in rows]
    if not found:
        raise NotFound(f"Không có mẫu cảnh báo '{slug}'.")
    return found


@dataclass(frozen=True)
class DiffLine:
    """One line of the difference between two versions: kept ('same'), 'removed' or 'added'."""

    kind: str
    text: str


def diff(older: dict[str, Any], newer: dict[str, Any]) -> list[DiffLine]:
    """What changed from one stored version to another, line by line of their catalogue files."""
    before = to_toml(spec_of(older)).splitlines()
    after = to_toml(spec_of(newer)).splitlines()
    lines: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if tag == "equal":
            lines += [DiffLine("same", text) for text in before[i1:i2]]
            continue
        lines += [DiffLine("removed", text) for text in before[i1:i2]]
        lines += [DiffLine("added", text) for text in after[j1:j2]]
    return lines


def changes(versions: list[dict[str, Any]]) -> list[list[DiffLine] | None]:
    """For each of `history`'s versions (newest first), its diff from the version before; None for the first."""
    return [diff(older, newer) for newer, older in zip(versions, versions[1:], strict=False)] + [None]


def _require(row: dict[str, Any], status: AlertStatus, action: str) -> None:
    if row["status"] != status.value:
        raise StateError(
            f"Không thể {action} mẫu '{row['slug']}' phiên bản {row['version']}: "
            f"đang ở trạng thái '{labels.alert_status(row['status'])}', cần '{labels.alert_status(status)}'."
        )


def _transition(conn: Connection, row: dict[str, Any], status: AlertStatus, **values: Any) -> None:
    if not compare_and_set(conn, alerts, row["id"], "status", row["status"], status=status.value, **values):
        raise StateError(f"Mẫu '{row['slug']}' vừa được người khác thay đổi; hãy thử lại.")


def listing(conn: Connection) -> list[dict[str, Any]]:
    """The newest version of every alert, with how many versions it has."""
    newest = select(alerts.c.slug, func.max(alerts.c.version).label("v"), func.count().label("n")).group_by(
        alerts.c.slug
    )
    sub = newest.subquery()
    rows = conn.execute(
        select(alerts, sub.c.n.label("versions"))
        .join(sub, (alerts.c.slug == sub.c.slug) & (alerts.c.version == sub.c.v))
        .order_by(alerts.c.slug)
    ).mappings()
    return [dict(r) for r in rows]


def matching(rows: list[dict[str, Any]], status: str = "", method: str = "", audience: str = "",
             text: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """The rows of `listing` with that status, method and audience whose id, title or body holds `text` (accents
    and case ignored); an empty criterion keeps every row."""
    wanted = fold(text)
    return [
        row for row in rows
        if (not status or row["status"] == status) and (not method or row["method"] == method)
        and (not audience or audience in row["audiences"])
        and (not wanted or wanted in fold(f"{row['slug']} {row['title']} {row['body']}"))
    ]  # fmt: skip


def spec_of(row: dict[str, Any]) -> AlertSpec:
    """The AlertSpec a stored version was made from."""
    return AlertSpec(
        id=row["slug"], method=row["method"], title=row["title"], body=row["body"], source=row["source"],
        body_ascii=row["body_ascii"] if row["body_ascii_reviewed"] else None, variables=row["variables"],
        audiences=tuple(row["audiences"]), priority=row["priority"], valid_days=row["valid_days"],
        zalo=row["zalo"], author=row["author"],
    )  # fmt: skip


def to_toml(spec: AlertSpec) -> str:
    """The catalogue file for `spec` (JSON strings are valid TOML basic strings)."""
    q = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
    lines = [
        f"id = {q(spec.id)}", f"method = {q(spec.method)}", f"title = {q(spec.title)}",
        f"priority = {q(spec.priority)}", f"valid_days = {spec.valid_days}",
        f"audiences = [{', '.join(q(a) for a in spec.audiences)}]", f"source = {q(spec.source)}",
        f"body = {q(spec.body)}",
    ]  # fmt: skip
    if spec.author:
        lines.append(f"author = {q(spec.author)}")
    if spec.body_ascii is not None:
        lines.append(f"body_ascii = {q(spec.body_ascii)}")
    if spec.variables:
        lines += ["", "[variables]"] + [f"{k} = {q(v)}" for k, v in spec.variables.items()]
    if spec.zalo:
        inline = lambda table: "{ " + ", ".join(f"{k} = {q(v)}" for k, v in table.items()) + " }"  # noqa: E731
        lines += ["", "[zalo]"] + [f"{k} = {inline(v) if isinstance(v, dict) else q(v)}" for k, v in spec.zalo.items()]
    return "\n".join(lines) + "\n"
