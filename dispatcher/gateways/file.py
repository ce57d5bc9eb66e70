"""The hand-off file: every message becomes one JSON line in a file a carrier can take.

It is the embedded default: a message is "sent" once its line is on disk, and a hand-off file
has no delivery reports. A batch goes out with one append, so what `send_batch` returns as sent
is in the file (the kernel's page cache: it survives the process being killed).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from datetime import datetime

from dispatcher.config import FileGatewaySettings
from dispatcher.gateways.base import DeliveryReport, GatewayError, Outcome, OutgoingMessage, SendResult, TemporaryError

# The line is spelled out rather than json.dumps'ed: a dict through the encoder costs three
# times as much, and this is the hot path. Strings still go through JSON's own escaping;
# the encoding is a StrEnum, which formats as its value ("UCS-2").
_quote = json.encoder.encode_basestring


def outbox_line(message: OutgoingMessage) -> str:
    """The JSON line (with its newline) that hands `message` to the carrier."""
    return (
        f'{{"id": {message.delivery_id}, "msisdn": {_quote(message.msisdn)}, "text": {_quote(message.text)}, '
        f'"encoding": "{message.encoding}", "parts": {message.parts}, '
        f'"carrier": {_quote(message.carrier)}, "channel": {_quote(message.channel)}}}\n'
    )


class FileGateway:
    """Appends each batch to `settings.path`, one JSON line per message."""

    name = "file"

    def __init__(self, settings: FileGatewaySettings) -> None:
        self.path = settings.path
        self._fd: int | None = None

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Append the batch; every message is sent, or every one failed with a TemporaryError."""
        data = "".join(map(outbox_line, messages)).encode()
        try:
            self._append(data)
        except GatewayError as error:
            return [error] * len(messages)
        return [SendResult(f"file-{m.delivery_id}", m.parts) for m in messages]

    def reports(self, now: datetime) -> list[DeliveryReport]:
        """Always empty: nobody reports back through a hand-off file."""
        return []

    async def close(self) -> None:
        """Release the file; a later batch opens it again and appends."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, data: bytes) -> None:
        """Write `data` at the end of the file, or leave the file as it was and raise TemporaryError."""
        try:
            fd = self._open()
            start = os.fstat(fd).st_size
        except OSError as exc:
            raise TemporaryError(f"cannot open {self.path}: {exc.strerror}", code="FILE-IO") from exc
        try:
            _write_all(fd, data)
        except OSError as exc:
            self._roll_back(fd, start)
            raise TemporaryError(f"cannot write {self.path}: {exc.strerror}", code="FILE-IO") from exc

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _roll_back(self, fd: int, size: int) -> None:
        """Cut a half-written batch off, so the carrier never reads a torn line; reopen next time."""
        with contextlib.suppress(OSError):  # a device may refuse; the batch is retried either way
            os.ftruncate(fd, size)
        os.close(fd)
        self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """One write of the whole batch; loop only if the kernel takes it in pieces."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
