"""The hand-off file: every message becomes one JSON line in a file a carrier can take.

It is the embedded default: a message is "sent" once its line is on disk, and a hand-off file
has no delivery reports. A batch goes out with one append, so what `send_batch` returns as sent
is in the file (the kernel's page cache: it survives the process being killed).

Nothing is buffered in the process, so the file is the whole account of what was handed off and
`confirm` answers from it alone: an id with a line was handed off, an id without one (or with no
file at all) never was. A process killed mid-append leaves at most a torn last line, which no
carrier can take and `confirm` ignores; the next gateway to open the file starts a fresh line
after it. Whoever takes the lines must therefore leave the file in place: a file moved away or
truncated would make handed-off messages look never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from dispatcher.config import FileGatewaySettings
from dispatcher.gateways.base import (
    DeliveryReport,
    GatewayError,
    Outcome,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TemporaryError,
)

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
        self._torn = False

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Append the batch; every message is sent, or every one failed with a TemporaryError."""
        data = "".join(map(outbox_line, messages)).encode()
        try:
            self._append(data)
        except GatewayError as error:
            return [error] * len(messages)
        return [SendResult(f"file-{m.delivery_id}", m.parts) for m in messages]

    async def confirm(self, delivery_ids: Sequence[int]) -> dict[int, SendResult | None]:
        """Each id's SendResult if the outbox has its line, else None: the file is all that was handed off."""
        wanted = set(delivery_ids)
        try:
            # Off the event loop: an outbox grows to millions of lines and an absent id reads them all.
            found = await asyncio.to_thread(_handed_off, self.path, wanted)
        except FileNotFoundError:
            found = {}
        except OSError as exc:
            raise TemporaryError(f"cannot read {self.path}: {exc.strerror}", code="FILE-IO") from exc
        return {delivery_id: found.get(delivery_id) for delivery_id in wanted}

    async def check(self) -> str:
        """That the outbox can be written (the file, or the folder it would be made in), without writing to it."""
        if self.path.is_dir():
            raise PermanentError(f"{self.path} là một thư mục, không phải tệp chuyển giao.", code="FILE-PATH")
        target = self.path if self.path.exists() else _existing_parent(self.path)
        if not os.access(target, os.W_OK):
            raise PermanentError(f"Không có quyền ghi vào {target}.", code="FILE-PERM")
        return f"Ghi được tệp chuyển giao {self.path}."

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
            _write_all(fd, b"\n" + data if self._torn else data)
        except OSError as exc:
            self._roll_back(fd, start)
            raise TemporaryError(f"cannot write {self.path}: {exc.strerror}", code="FILE-IO") from exc
        self._torn = False

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Read as well as append, to see whether a killed process left the last line torn.
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._torn = _ends_mid_line(self._fd)
        return self._fd

    def _roll_back(self, fd: int, size: int) -> None:
        """Cut a half-written batch off, so the carrier never reads a torn line; reopen next time."""
        with contextlib.suppress(OSError):  # a device may refuse; the batch is retried either way
            os.ftruncate(fd, size)
        os.close(fd)
        self._fd = None


def _existing_parent(path: Path) -> Path:
    """The nearest folder above `path` that exists: where the first send would make the rest."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def _write_all(fd: int, data: bytes) -> None:
    """One write of the whole batch; loop only if the kernel takes it in pieces."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _ends_mid_line(fd: int) -> bool:
    """Whether the file ends in a torn line, which the next append must not run on from."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _handed_off(path: Path, wanted: set[int]) -> dict[int, SendResult]:
    """The SendResult of each `wanted` id that has a line in the outbox, reading no further than needed."""
    found: dict[int, SendResult] = {}
    with path.open("rb") as outbox:
        for line in outbox:
            if not line.endswith(b"\n"):
                break  # the torn end of an append cut short: not handed off
            handed_off = _wanted_line(line, wanted)
            if handed_off is not None:
                delivery_id, parts = handed_off
                found.setdefault(delivery_id, SendResult(f"file-{delivery_id}", parts))
                if len(found) == len(wanted):
                    break
    return found


def _wanted_line(line: bytes, wanted: set[int]) -> tuple[int, int] | None:
    """The id and parts of an outbox line for a `wanted` id; None for other lines and for a torn one."""
    # The id is read off the start `outbox_line` gives every line, so other ids cost no JSON parse.
    comma = line.find(b",")
    if not line.startswith(b'{"id": ') or not line[7:comma].isdigit() or int(line[7:comma]) not in wanted:
        return None
    try:
        return int(line[7:comma]), json.loads(line)["parts"]
    except ValueError:  # a line cut short by a killed process, which the next gateway ended
        return None
