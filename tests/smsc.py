"""The project's own loopback SMSC: SMPP 3.4 over asyncio, with the faults a carrier's SMSC shows.

It speaks the wire protocol with its own codec (not the gateway's library), so a test checks what
really crossed the socket. It binds (or refuses to), answers enquire_link and unbind, gives each
submit_sm a message id (hex in its answer; decimal in receipts if asked), sends a delivery
receipt per part (TLVs and text, or the text alone), and can throttle, answer slowly, drop the
link mid-window, send receipts out of order or twice, and send messages from people (MO).

    python -m tests.smsc --port 2775          # runs until Ctrl-C; only ever on 127.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

BIND_TRX, BIND_TX, BIND_RX = 0x09, 0x02, 0x01
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK, GENERIC_NACK = 0x04, 0x05, 0x06, 0x15, 0x80000000
RESP = 0x80000000
TLV_RECEIPTED_ID, TLV_MESSAGE_STATE, TLV_PAYLOAD = 0x001E, 0x0427, 0x0424
TLV_SAR_REF, TLV_SAR_TOTAL, TLV_SAR_SEQ = 0x020C, 0x020E, 0x020F
VIETNAM = timezone(timedelta(hours=7))


@dataclass
class Submit:
    """One submit_sm as it came over the wire."""

    source_ton: int
    source_npi: int
    source: str
    dest_ton: int
    dest_npi: int
    destination: str
    esm_class: int
    registered_delivery: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]
    message_id: str | None = None  # None: not accepted


@dataclass
class Behaviour:
    """What the SMSC does; every fault off by default."""

    refuse_bind: int = 0  # a command_status to refuse binds with (0x0E: wrong password)
    password: str | None = None  # when set, a bind with another password is refused with ESME_RINVPASWD
    throttle_first: int = 0  # answer the first N submits with ESME_RTHROTTLED
    status_for: Callable[[Submit], int] = lambda submit: 0  # the command_status of each submit
    answer_delay: float = 0.0  # seconds before each submit_sm_resp
    drop_after: int = 0  # close the link, unanswered, on reading the N-th submit (once)
    receipts: bool = True
    receipt_tlvs: bool = True  # receipted_message_id + message_state; else the text alone
    receipt_decimal: bool = False  # ids in receipts in decimal (hex in submit_sm_resp)
    date_digits: int = 10  # yyMMddhhmm, or 12 with seconds
    lowercase: bool = False  # `id:… stat:…` keys and words in lower case
    stat_for: Callable[[Submit], str] = lambda submit: "DELIVRD"
    reverse_receipts: int = 0  # hold receipts and send each N in reverse order
    receipts_twice: bool = False
    record: bool = True  # keep every submit in `submits` (off when serving a bench: its heap would slow it)


@dataclass
class Smsc:
    """A running loopback SMSC; what it saw is in `binds`, `submits` and `enquire_links`."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    port: int = 0
    binds: list[tuple[int, str, str]] = field(default_factory=list)  # (command, system_id, password)
    submits: list[Submit] = field(default_factory=list)
    enquire_links: int = 0
    received: int = 0  # submits read, recorded or not
    unbinds: int = 0
    acks: list[int] = field(default_factory=list)  # the command_status of each deliver_sm_resp
    _next_id: int = 0x10000
    _dropped: bool = False
    _receivers: list[asyncio.StreamWriter] = field(default_factory=list)
    _held: list[bytes] = field(default_factory=list)
    _outbox: dict[asyncio.StreamWriter, list[bytes]] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (`port` 0: any free one, then in `self.port`)."""
        self.loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._session, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every session."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._receivers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    def accepted(self) -> list[Submit]:
        """The submits it answered with a message id."""
        return [submit for submit in self.submits if submit.message_id is not None]

    # -- a session ----------------------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            writer.transport.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
            while True:
                header = await reader.readexactly(16)
                length, command, status, sequence = struct.unpack(">IIII", header)
                body = await reader.readexactly(length - 16)
                if command == DELIVER_SM | RESP:
                    self.acks.append(status)
                if not await self._handle(command, sequence, body, writer):
                    break
        if writer in self._receivers:
            self._receivers.remove(writer)
        self._flush(writer)  # what it answered goes before the link does
        writer.close()

    async def _handle(self, command: int, sequence: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one PDU; False ends the session."""
        if command in (BIND_TRX, BIND_TX, BIND_RX):
            return self._bind(command, sequence, body, writer)
        if command == ENQUIRE_LINK:
            self.enquire_links += 1
            self._send(writer, pdu(ENQUIRE_LINK | RESP, 0, sequence))
        elif command == UNBIND:
            self.unbinds += 1
            self._send(writer, pdu(UNBIND | RESP, 0, sequence))
            self._flush(writer)
            await writer.drain()
            return False
        elif command == SUBMIT_SM:
            return await self._submit(sequence, body, writer)
        elif command & RESP:
            pass  # deliver_sm_resp, enquire_link_resp
        else:
            self._send(writer, pdu(GENERIC_NACK, 0x03, sequence))
        return True

    def _bind(self, command: int, sequence: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        system_id, password, *_ = cstrings(body, 3)
        self.binds.append((command, system_id, password))
        b = self.behaviour
        status = b.refuse_bind or (0x0E if b.password is not None and password != b.password else 0)
        self._send(writer, pdu(command | RESP, status, sequence, cstring("smsc")))
        self._flush(writer)
        if not status and command != BIND_TX:
            self._receivers.append(writer)
        return not status

    async def _submit(self, sequence: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        submit = parse_submit(body)
        self.received += 1
        if self.behaviour.record:
            self.submits.append(submit)
        b = self.behaviour
        if b.drop_after and self.received >= b.drop_after and not self._dropped:
            self._dropped = True
            return False  # gone, unanswered, with the rest of the window in flight
        status = 0x58 if self.received <= b.throttle_first else b.status_for(submit)
        if not status:
            self._next_id += 1
            submit.message_id = format(self._next_id, "X")
        if b.answer_delay:
            await asyncio.sleep(b.answer_delay)
        self._send(writer, pdu(SUBMIT_SM | RESP, status, sequence, cstring(submit.message_id or "")))
        if submit.message_id is not None and b.receipts and submit.registered_delivery & 1:
            self._receipt(submit, writer)
        return True

    def _send(self, writer: asyncio.StreamWriter, *data: bytes) -> None:
        """Write at the end of this turn of the loop, all together: one send per burst, as a real SMSC's stack does."""
        if writer not in self._outbox:
            self._outbox[writer] = []
            asyncio.get_running_loop().call_soon(self._flush, writer)
        self._outbox[writer] += data

    def _flush(self, writer: asyncio.StreamWriter) -> None:
        data = self._outbox.pop(writer, [])
        if data and not writer.is_closing():
            writer.write(b"".join(data))

    # -- what the SMSC sends ------------------------------------------------------------

    def _receipt(self, submit: Submit, writer: asyncio.StreamWriter) -> None:
        """The receipt of one accepted part, now, later in reverse order, or twice."""
        b = self.behaviour
        data = receipt_pdu(submit, b, self._sequence())
        copies = [data, data] if b.receipts_twice else [data]
        if not b.reverse_receipts:
            self._send(writer, *copies)
            return
        self._held += copies
        if len(self._held) >= b.reverse_receipts:
            self._send(writer, *reversed(self._held))
            self._held = []

    def send_mo(self, source: str, text: str) -> None:
        """A person's message (MO) from `source` to the brandname, to every bound receiver (thread-safe)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._send_mo, source, text)

    def send_receipt(self, submit: Submit) -> None:
        """The receipt of an accepted part, now, to every bound receiver (thread-safe): for receipts held back."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._send_receipt, submit)

    def _send_receipt(self, submit: Submit) -> None:
        data = receipt_pdu(submit, self.behaviour, self._sequence())
        for writer in self._receivers:
            writer.write(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are to every bound receiver (a malformed PDU, say), thread-safe."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(lambda: [writer.write(data) for writer in self._receivers])

    def _send_mo(self, source: str, text: str) -> None:
        coding, data = (0, text.encode("ascii")) if text.isascii() else (8, text.encode("utf-16-be"))
        body = deliver_body(source, "CANHBAO", 0, coding, data, b"")
        for writer in self._receivers:
            writer.write(pdu(DELIVER_SM, 0, self._sequence(), body))

    def _sequence(self) -> int:
        self._next_id += 1
        return self._next_id


# -- the codec ---------------------------------------------------------------------------


def pdu(command: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    """One PDU on the wire."""
    return struct.pack(">IIII", 16 + len(body), command, status, sequence) + body


def cstring(value: str) -> bytes:
    return value.encode("latin-1") + b"\x00"


def cstrings(body: bytes, count: int) -> list[str]:
    return [part.decode("latin-1") for part in body.split(b"\x00", count)[:count]]


class _Reader:
    """Reads a PDU body field by field."""

    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def cstring(self) -> str:
        end = self.body.index(b"\x00", self.at)
        value, self.at = self.body[self.at : end].decode("latin-1"), end + 1
        return value

    def byte(self) -> int:
        self.at += 1
        return self.body[self.at - 1]

    def octets(self, n: int) -> bytes:
        self.at += n
        return self.body[self.at - n : self.at]

    def tlvs(self) -> Iterator[tuple[int, bytes]]:
        while self.at + 4 <= len(self.body):
            tag, length = struct.unpack(">HH", self.octets(4))
            yield tag, self.octets(length)


def parse_submit(body: bytes) -> Submit:
    """A submit_sm body, field by field as SMPP 3.4 §4.4.1 lays it out."""
    r = _Reader(body)
    r.cstring()  # service_type
    source_ton, source_npi, source = r.byte(), r.byte(), r.cstring()
    dest_ton, dest_npi, destination = r.byte(), r.byte(), r.cstring()
    esm_class, _protocol, _priority = r.byte(), r.byte(), r.byte()
    r.cstring(), r.cstring()  # schedule_delivery_time, validity_period
    registered, _replace, coding, _default = r.byte(), r.byte(), r.byte(), r.byte()
    message = r.octets(r.byte())
    return Submit(source_ton, source_npi, source, dest_ton, dest_npi, destination, esm_class, registered, coding,
                  message, dict(r.tlvs()))  # fmt: skip


def deliver_body(source: str, destination: str, esm_class: int, coding: int, message: bytes, tlvs: bytes) -> bytes:
    """A deliver_sm body: from `source` (international) to `destination`."""
    return (
        cstring("") + bytes([1, 1]) + cstring(source) + bytes([5, 0]) + cstring(destination)
        + bytes([esm_class, 0, 0]) + cstring("") + cstring("") + bytes([0, 0, coding, 0, len(message)]) + message
        + tlvs
    )  # fmt: skip


def receipt_text(message_id: str, stat: str, behaviour: Behaviour, now: datetime | None = None) -> str:
    """The receipt text of SMPP 3.4 Appendix B, with the dates and case the behaviour asks for."""
    shape = "%y%m%d%H%M%S" if behaviour.date_digits == 12 else "%y%m%d%H%M"
    date = (now or datetime.now(VIETNAM)).strftime(shape)
    err = "000" if stat == "DELIVRD" else "001"
    text = (f"id:{message_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} submit date:{date} "
            f"done date:{date} stat:{stat} err:{err} text:")  # fmt: skip
    return text.lower() if behaviour.lowercase else text


STATE_OF = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}


def receipt_pdu(submit: Submit, behaviour: Behaviour, sequence: int) -> bytes:
    """The deliver_sm receipt for an accepted submit."""
    assert submit.message_id is not None
    message_id = str(int(submit.message_id, 16)) if behaviour.receipt_decimal else submit.message_id
    stat = behaviour.stat_for(submit)
    text = receipt_text(message_id, stat, behaviour).encode("ascii")
    tlvs = b""
    if behaviour.receipt_tlvs:
        tlvs = (struct.pack(">HH", TLV_RECEIPTED_ID, len(message_id) + 1) + cstring(message_id)
                + struct.pack(">HHB", TLV_MESSAGE_STATE, 1, STATE_OF[stat]))  # fmt: skip
    body = deliver_body(submit.destination, submit.source, 0x04, 0, text, tlvs)
    return pdu(DELIVER_SM, 0, sequence, body)


# -- running it ----------------------------------------------------------------------------


@contextlib.contextmanager
def running(behaviour: Behaviour | None = None) -> Iterator[Smsc]:
    """An SMSC on a free loopback port, served by its own thread and event loop, for the length of the block."""
    smsc = Smsc(behaviour or Behaviour())
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(smsc.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="smsc", daemon=True)
    thread.start()
    started.wait(5)
    try:
        yield smsc
    finally:
        asyncio.run_coroutine_threadsafe(smsc.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.smsc --port 2775`: serve until stopped."""
    parser = argparse.ArgumentParser(description="A loopback SMSC (SMPP 3.4) for tests, the demo and the bench.")
    parser.add_argument("--port", type=int, default=2775)
    parser.add_argument("--password", default=None, help="refuse binds with another password")
    parser.add_argument("--undeliverable-suffix", default="", help="numbers ending so get UNDELIV receipts")
    args = parser.parse_args(argv)
    suffix = args.undeliverable_suffix
    behaviour = Behaviour(
        record=False,
        password=args.password,
        stat_for=lambda s: "UNDELIV" if suffix and s.destination.endswith(suffix) else "DELIVRD",
    )

    async def serve() -> None:
        smsc = Smsc(behaviour)
        await smsc.start(args.port)
        print(f"SMSC on 127.0.0.1:{smsc.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
