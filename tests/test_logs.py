"""JSON logs: one object per line, Vietnamese kept readable, no phone number ever in full."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
import structlog

from dispatcher.logs import configure

# A Vietnamese number in full: +84, 84 or 0 followed by nine digits, separators removed.
UNMASKED = re.compile(r"(?:\+84|84|0)\d{9}")


def unmasked_numbers(text: str) -> list[str]:
    """Every full phone number in log output, however its digits were grouped."""
    return UNMASKED.findall(re.sub(r"(?<=\d)[ .\-](?=\d)", "", text))


def events(stream: io.StringIO) -> list[dict[str, object]]:
    """The events written so far, without timestamps, after checking no number is in full."""
    text = stream.getvalue()
    assert unmasked_numbers(text) == [], text
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        line.pop("timestamp")
    return lines


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """JSON logging into a buffer, with structlog's defaults and an empty context restored after."""
    buffer = io.StringIO()
    configure(fmt="json", stream=buffer)
    yield buffer
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def test_every_line_is_one_json_object(stream: io.StringIO) -> None:
    """Each event becomes one JSON line with its event name and level."""
    log = structlog.get_logger()
    log.info("alert.sent", parts=3)
    log.warning("gateway.slow", seconds=2.5)
    assert events(stream) == [
        {"event": "alert.sent", "parts": 3, "level": "info"},
        {"event": "gateway.slow", "seconds": 2.5, "level": "warning"},
    ]


def test_a_number_under_a_phone_key_is_masked(stream: io.StringIO) -> None:
    """msisdn=, phone=, to= and recipient= values are masked whatever their written form."""
    structlog.get_logger().info(
        "delivery.sent", msisdn="+84905123456", phone="0912345678", to="+84 981 234 567", recipient="84561234567"
    )
    [event] = events(stream)
    assert event["msisdn"] == "+8490****456"
    assert event["phone"] == "0912***678"
    assert event["recipient"] == "8456****567"
    assert event["to"] == "+8498****567"


def test_a_number_inside_free_text_is_masked(stream: io.StringIO) -> None:
    """Numbers written anywhere in the event or another value are masked."""
    structlog.get_logger().info("Gọi 0905 123 456 ngay", note="số 84-905-123-456 và +84912345678 là lừa đảo")
    [event] = events(stream)
    assert event["event"] == "Gọi 0905***456 ngay"
    assert event["note"] == "số 8490****456 và +8491****678 là lừa đảo"


def test_numbers_inside_a_list_are_masked(stream: io.StringIO) -> None:
    """Each string in a list or tuple value is masked; other items are kept."""
    structlog.get_logger().info("batch.sent", to=["+84905123456", "0981 234 567", 3], rows=("0912345678",))
    [event] = events(stream)
    assert event["to"] == ["+8490****456", "0981***567", 3]
    assert event["rows"] == ["0912***678"]


def test_bound_and_context_values_are_masked(stream: io.StringIO) -> None:
    """Numbers bound to a logger or to the context are masked like any other value."""
    structlog.contextvars.bind_contextvars(recipient="+84912345678")
    structlog.get_logger().bind(phone="+84905123456").info("delivery.queued")
    [event] = events(stream)
    assert (event["recipient"], event["phone"]) == ("+8491****678", "+8490****456")


def test_short_numbers_and_dates_are_kept(stream: io.StringIO) -> None:
    """Counts, codes and dates are not mistaken for phone numbers."""
    structlog.get_logger().info("blast.done", note="ngày 2026-11-23, gọi 113, mã 123456", count=1000000)
    [event] = events(stream)
    assert event["note"] == "ngày 2026-11-23, gọi 113, mã 123456"
    assert event["count"] == 1000000


def test_vietnamese_text_is_written_as_is(stream: io.StringIO) -> None:
    """Vietnamese stays readable in the JSON line itself: no \\u escapes."""
    structlog.get_logger().info("alert.created", title="Cảnh báo lừa đảo")
    assert '"title": "Cảnh báo lừa đảo"' in stream.getvalue()
    assert "\\u" not in stream.getvalue()


def test_a_number_inside_a_mapping_is_masked(stream: io.StringIO) -> None:
    """A number in a nested mapping (a gateway's payload, say) is masked too."""
    structlog.get_logger().info("gateway.request", payload={"to": "+84905123456", "body": "Cảnh báo"})
    [event] = events(stream)
    assert event["payload"] == {"to": "+8490****456", "body": "Cảnh báo"}


def test_a_number_given_as_an_integer_is_masked(stream: io.StringIO) -> None:
    """A number read from a spreadsheet as an integer is masked like its text."""
    structlog.get_logger().info("import.rejected", msisdn=84905123456)
    [event] = events(stream)
    assert "905123456" not in json.dumps(event)


def test_a_number_inside_an_exception_message_is_masked(stream: io.StringIO) -> None:
    """log.exception() with a number in the error message writes it masked."""
    try:
        raise RuntimeError("gateway refused +84905123456")
    except RuntimeError:
        structlog.get_logger().exception("delivery.failed")
    [event] = events(stream)
    assert "+8490****456" in json.dumps(event, ensure_ascii=False)


def test_an_import_logs_no_full_number(regions, tmp_path, sqlite_engine, now) -> None:
    """A whole import with rejected rows, logged at debug level, leaves no full number in the log."""
    import io as _io
    import re as _re

    from dispatcher import logs
    from dispatcher.subscribers import SubscriberImporter

    from .conftest import DATA

    stream = _io.StringIO()
    logs.configure(fmt="json", level="debug", stream=stream)
    try:
        SubscriberImporter(sqlite_engine, regions, tmp_path / "rejects").import_file(DATA / "thue-bao-da-nang.csv", now)
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "subscribers.import.finished" in text and "row_rejected" in text
    assert not _re.search(r"(?<!\d)(?:\+?84|0)[2-9]\d{8,9}(?!\d)", text)
    assert not _re.search(r"\d{3} ?\d{4} ?\d{3}", text)  # landlines and spaced numbers too
    assert "0977***413" in text  # a rejected row, logged at debug level


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as a person's stderr does."""

    def isatty(self) -> bool:
        return True


def test_in_a_terminal_auto_logs_only_warnings_so_output_stays_clean() -> None:
    """With format auto on a terminal, info events are not written (the command's own output speaks); warnings are."""
    terminal = _Terminal()
    configure(fmt="auto", level="info", stream=terminal)
    structlog.get_logger().info("blast.started", blast_id=1)
    structlog.get_logger().warning("dispatch.database_unavailable", error="locked")
    assert "blast.started" not in terminal.getvalue()
    assert "dispatch.database_unavailable" in terminal.getvalue() and not terminal.getvalue().startswith("{")


def test_off_a_terminal_auto_logs_json_lines_at_the_configured_level() -> None:
    """With format auto on a pipe or a service's stderr, every event at the level is one JSON line."""
    piped = io.StringIO()
    configure(fmt="auto", level="info", stream=piped)
    structlog.get_logger().info("blast.started", blast_id=1)
    assert json.loads(piped.getvalue())["event"] == "blast.started"
