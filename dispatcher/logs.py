"""Structured logging: JSON in production, only warnings (pretty) in a terminal, phone numbers always masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from dispatcher.phones import mask_digits, mask_text

# Keys whose value is a phone number in full; anything else is scanned for number-like runs.
PHONE_KEYS = frozenset({"msisdn", "phone", "to", "destination_addr", "source_addr", "recipient"})


def mask_phone_numbers(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: no unmasked phone number leaves the process in a log line."""
    for key, value in event.items():
        event[key] = _masked(value, key in PHONE_KEYS)
    return event


def _masked(value: Any, is_phone: bool = False) -> Any:
    """`value` with phone numbers masked, looking inside containers and at integers."""
    if isinstance(value, str):
        return mask_digits(value) if is_phone else mask_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return mask_text(str(value)) if mask_text(str(value)) != str(value) else value
    if isinstance(value, Mapping):
        return {k: _masked(v, k in PHONE_KEYS) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_masked(v) for v in value]
    return value


class _Stderr:
    """Whatever sys.stderr is when a line is written (tests and tools swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog to `stream`, by default stderr: stdout is for command output and --json.

    With `auto`, a person at a terminal reads the command's own output (progress, tables, a
    summary, in Vietnamese), so only warnings and errors are logged there, readably; anywhere
    else (a service, a pipe, a file) gets JSON lines at `level`. `json` and `console` are
    taken as asked, at `level`.
    """
    stream = stream or _Stderr()  # type: ignore[assignment]
    interactive = fmt == "auto" and stream.isatty()
    pretty = fmt == "console" or interactive
    levels = logging.getLevelNamesMapping()
    threshold = max(levels[level.upper()], logging.WARNING) if interactive else levels[level.upper()]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if pretty
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Exceptions become data before masking, so their messages are masked too.
            structlog.processors.dict_tracebacks if not pretty else structlog.processors.format_exc_info,
            mask_phone_numbers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
