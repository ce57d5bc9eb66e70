"""Structured logging: JSON in production, pretty in a terminal, phone numbers always masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from dispatcher.phones import mask, mask_text

# Keys whose value is a phone number in full; anything else is scanned for number-like runs.
PHONE_KEYS = frozenset({"msisdn", "phone", "to", "destination_addr", "source_addr", "recipient"})


def mask_phone_numbers(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: no unmasked phone number leaves the process in a log line."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask(value) if key in PHONE_KEYS and value.startswith("+") else mask_text(value)
        elif isinstance(value, list | tuple):
            event[key] = [mask_text(v) if isinstance(v, str) else v for v in value]
    return event


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog to `stream` (stderr: stdout is for command output and --json)."""
    stream = stream or sys.stderr
    pretty = fmt == "console" or (fmt == "auto" and stream.isatty())
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
            mask_phone_numbers,
            structlog.processors.dict_tracebacks if not pretty else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
