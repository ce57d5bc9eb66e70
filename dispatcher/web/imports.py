"""Subscriber imports uploaded in the console, run off the request: a job with progress the page polls.

The import itself is the CLI's (`subscribers.import_file(actor=)`): same rows, refusals, reject
report and audit. What this adds is where it runs. An upload is copied to a temporary folder
(refused past `[web] import_max_mb`, nothing stored), then imported on this process's import
thread, one import at a time (each is one write transaction). The request waits
`[web] import_wait_seconds` for it: a small file answers with its result at once, as before; a
large one is followed on its own page, which asks for the count of rows read every second.

A job is kept in the database (`import_jobs`) for `KEEP` after it ends, so that behind several
web processes (`canhbao web --workers N`, or several machines) whichever process a poll lands on
answers it. The rows read so far are stored once a second where the database lets them be: on
PostgreSQL; on SQLite the import holds the database's only write lock until it commits, so
another process shows the job running with no count until it ends (the process running it shows
its live count from memory). The rejects file is written on the machine that ran the import.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from sqlalchemy import Engine, delete, insert, or_, select, update
from starlette.requests import Request

from dispatcher.audit import acting_through
from dispatcher.config import WebSettings
from dispatcher.errors import CanhBaoError
from dispatcher.formats import number
from dispatcher.models import import_jobs
from dispatcher.subscribers import ImportSummary, importer_for
from dispatcher.web import i18n
from dispatcher.web.deps import origin, regions
from dispatcher.web.proxies import client_address

log = structlog.get_logger(__name__)

KEEP = timedelta(hours=1)  # how long an ended job stays readable
PROGRESS_EVERY = 1.0  # seconds between two counts of rows stored
CHUNK = 1 << 20
FORM_ROOM = 64 * 1024  # what a multipart form adds around the file: boundaries, headers, the CSRF field

UNKNOWN_JOB = "Không có lần nhập này ở đây (đã quá một giờ, hoặc do người khác bắt đầu)."
i18n.register(
    {
        UNKNOWN_JOB: "No such import here (over an hour ago, or started by someone else).",
        "Tệp quá lớn: tối đa {limit} ([web] import_max_mb); không có gì được lưu.": (
            "The file is too large: at most {limit} ([web] import_max_mb); nothing was stored."
        ),
    }
)


class TooLarge(Exception):
    """The upload is over the configured size: nothing was imported."""


@dataclass
class ImportJob:
    """One uploaded file being imported: who sent it, how far it got, and how it ended."""

    id: str
    actor: str
    name: str
    size: int
    rows: int = 0
    """Rows read so far (updated by the import as it stages them)."""
    summary: ImportSummary | None = None
    failure: CanhBaoError | None = None
    """Why the import was refused (its message names the file as sent)."""
    error: str | None = None
    ended_at: datetime | None = None
    future: Future[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """Whether the import has ended, with a summary or an error."""
        return self.ended_at is not None


def upload_limit(web: WebSettings) -> int:
    """The largest subscriber file accepted, in bytes."""
    return int(web.import_max_mb * 1_000_000)


def declared_too_large(request: Request) -> bool:
    """Whether the request says, before its body is read, that it is over the limit (with room for the form)."""
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > upload_limit(request.app.state.settings.web) + FORM_ROOM


def too_large(_: Callable[[str], str], web: WebSettings) -> str:
    """The refusal of a file over `[web] import_max_mb`, through the translator `_` (page or API language)."""
    message = _("Tệp quá lớn: tối đa {limit} ([web] import_max_mb); không có gì được lưu.")
    return message.format(limit=megabytes(upload_limit(web)))


def megabytes(size: int) -> str:
    """A size as a person reads it: '50 MB', '2,5 MB', '100 KB' under one megabyte."""
    if size >= 1_000_000:
        return f"{number(size / 1_000_000, 1).removesuffix(',0')} MB"
    return f"{number(size / 1_000, 1).removesuffix(',0')} KB"


def copy_upload(source: BinaryIO, target: Path, limit: int) -> int:
    """Copy an uploaded file to `target`, its size returned; TooLarge (and nothing kept) past `limit` bytes."""
    size = 0
    with target.open("wb") as copy:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit:
                break
            copy.write(chunk)
    if size > limit:
        target.unlink(missing_ok=True)
        raise TooLarge()
    return size


class ImportJobs:
    """The imports of one web process, started on a thread of their own; found again by id and person, those of
    every process, in the database."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine, self.clock = engine, clock
        self._jobs: dict[str, ImportJob] = {}
        """The jobs this process runs or ran (the live count of rows, the refusal itself)."""
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import")

    def start(
        self, actor: str, path: Path, size: int, run: Callable[[Path, Callable[[int], None]], ImportSummary]
    ) -> ImportJob:
        """Import `path` (a file in a temporary folder, removed at the end) with `run(path, on_progress)`."""
        job = ImportJob(secrets.token_urlsafe(12), actor, path.name, size)
        self._started(job)
        progress = _Progress(self.engine, job)

        def work() -> None:
            try:
                job.summary = run(path, progress)
                job.rows = job.summary.rows
            except CanhBaoError as exc:  # its message names the file by our temporary path: name it as sent
                exc.args = (str(exc).replace(f"{path.parent}/", ""),)
                job.failure, job.error = exc, str(exc)
            except Exception:
                log.exception("subscribers.import.crashed", job=job.id)
                job.error = "Lỗi không mong đợi khi nhập tệp: đã ghi nhật ký, không có gì được lưu."
            finally:
                shutil.rmtree(path.parent, ignore_errors=True)
                self._ended(job)

        job.future = self._thread.submit(work)
        return job

    def find(self, job_id: str, actor: str) -> ImportJob | None:
        """The job `job_id` if `actor` started it (another person's import is not theirs to follow)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            with self.engine.connect() as conn:
                found = conn.execute(select(import_jobs).where(import_jobs.c.id == job_id)).first()
            job = _from_row(found) if found is not None else None
        return job if job is not None and job.actor == actor else None

    def _started(self, job: ImportJob) -> None:
        """The job stored (committed before it runs) and old ones forgotten, here and in the database."""
        now, j = self.clock(), import_jobs.c
        with self.engine.begin() as conn:
            conn.execute(delete(import_jobs).where(or_(j.ended_at < now - KEEP, j.started_at < now - KEEP * 24)))
            conn.execute(insert(import_jobs).values(id=job.id, actor=job.actor, name=job.name, size=job.size,
                                                    rows=0, started_at=now))  # fmt: skip
        with self._lock:
            for key in [k for k, j in self._jobs.items() if j.ended_at is not None and now - j.ended_at > KEEP]:
                del self._jobs[key]
            self._jobs[job.id] = job

    def _ended(self, job: ImportJob) -> None:
        """How `job` ended, stored for every process; then (last: it makes the job done here) in memory."""
        ended_at = self.clock()
        summary = job.summary.to_json() if job.summary is not None else None
        try:
            with self.engine.begin() as conn:
                conn.execute(update(import_jobs).where(import_jobs.c.id == job.id)
                             .values(rows=job.rows, summary=summary, error=job.error, ended_at=ended_at))  # fmt: skip
        except Exception:  # the import's own outcome stands; only other processes will not see it
            log.exception("subscribers.import.not_recorded", job=job.id)
        job.ended_at = ended_at


class _Progress:
    """The count of rows read, kept on the job at once and stored at most once a second (not on SQLite: see above)."""

    def __init__(self, engine: Engine, job: ImportJob) -> None:
        self.engine, self.job = engine, job
        self.stores = engine.dialect.name != "sqlite"
        self.stored_at = -PROGRESS_EVERY  # the first count is stored at once

    def __call__(self, rows: int) -> None:
        self.job.rows = rows
        if self.stores and time.monotonic() - self.stored_at >= PROGRESS_EVERY:
            self.stored_at = time.monotonic()
            with self.engine.begin() as conn:
                conn.execute(update(import_jobs).where(import_jobs.c.id == self.job.id).values(rows=rows))


def _from_row(row: Any) -> ImportJob:
    """A job as the database holds it (run by this process or another)."""
    summary = ImportSummary.from_json(row.summary) if row.summary is not None else None
    return ImportJob(row.id, row.actor, row.name, row.size, row.rows, summary, None, row.error, row.ended_at)


_creating = threading.Lock()


def jobs_of(state: Any) -> ImportJobs:
    """The import jobs of this app (made on first use, like the region index)."""
    with _creating:
        if getattr(state, "import_jobs", None) is None:
            state.import_jobs = ImportJobs(state.engine, state.clock)
    return state.import_jobs


def upload_folder() -> Path:
    """A new temporary folder for one upload (the job removes it when the import ends)."""
    return Path(tempfile.mkdtemp(prefix="canhbao-upload-"))


def start_import(request: Request, actor: str, path: Path, size: int) -> ImportJob:
    """The import of `path` for `actor`, started on the import thread, audited with the request's origin."""
    state = request.app.state
    importer = importer_for(state.engine, regions(request), state.settings.subscribers)
    source, via = origin(request)
    address = client_address(request)

    def run(path: Path, on_progress: Callable[[int], None]) -> ImportSummary:
        with acting_through(source, via, address):  # the thread records the person's origin, as a request does
            return importer.import_file(path, state.clock(), on_progress, actor=actor)

    return jobs_of(state).start(actor, path, size, run)


async def waited(request: Request, job: ImportJob) -> bool:
    """Wait up to `[web] import_wait_seconds` for `job`; whether it has ended."""
    assert job.future is not None
    await asyncio.wait([asyncio.wrap_future(job.future)], timeout=request.app.state.settings.web.import_wait_seconds)
    return job.done
