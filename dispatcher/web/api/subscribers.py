"""`/api/v1/subscribers/import`: a CSV or XLSX file uploaded, imported as `canhbao subscribers import` does.

The upload is written to a private temporary folder under its own name (the audit log and the
rejects file are named after it), then given to the same importer as the CLI's. The answer is
the summary and the refused rows, numbers masked; the full rejects file stays where the CLI
writes it (`[subscribers] rejects_dir`). A file over `[web] import_max_mb` is refused with 413; an
import not done within `[web] import_wait_seconds` answers 202 with its `href`
(`/api/v1/subscribers/imports/{id}`), asked until it is done (dispatcher/web/imports.py).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path as FilePath
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dispatcher.errors import NotFound
from dispatcher.phones import mask_digits
from dispatcher.subscribers import ImportSummary
from dispatcher.web import i18n
from dispatcher.web.api import problems
from dispatcher.web.api.schemas import ImportJob, ImportResult, RejectedRow
from dispatcher.web.auth import Principal, allow
from dispatcher.web.imports import (
    UNKNOWN_JOB,
    TooLarge,
    copy_upload,
    declared_too_large,
    jobs_of,
    start_import,
    too_large,
    upload_folder,
    upload_limit,
    waited,
)

router = APIRouter(prefix="/subscribers", tags=["subscribers"])
Liaison = Annotated[Principal, allow("liaison")]
SHOWN_REJECTS = 1_000


PROBLEM = {"content": {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {"model": ImportJob, "description": "Not done within `[web] import_wait_seconds`: it goes on; ask `href`."},
    413: {"description": "The file is over `[web] import_max_mb`: nothing was imported.", **PROBLEM},
}


@router.post("/import", response_model=ImportResult, responses=ANSWERS)
async def import_subscribers(
    request: Request,
    principal: Liaison,
    file: Annotated[UploadFile, File(description="CSV (UTF-8, UTF-16 or Windows-1258) or XLSX")],
) -> Any:
    """Add new numbers and update known ones; refused rows are listed with the reason. A file over
    `[web] import_max_mb` is a 413 (nothing stored); an import longer than `[web] import_wait_seconds`
    answers 202 and goes on, followed at its `href`."""
    web, _ = request.app.state.settings.web, i18n.translator(i18n.api_language(request))
    if declared_too_large(request):
        return problems.problem(request, 413, "too_large", too_large(_, web))
    folder = upload_folder()
    path = folder / (PurePath((file.filename or "").replace("\\", "/")).name or "tep-tai-len.csv")
    try:
        size = await run_in_threadpool(copy_upload, file.file, path, upload_limit(web))
    except TooLarge:
        shutil.rmtree(folder, ignore_errors=True)
        return problems.problem(request, 413, "too_large", too_large(_, web))
    job = start_import(request, principal.actor, path, size)
    if not await waited(request, job):
        return JSONResponse(_job(job).model_dump(mode="json"), 202, headers={"Location": _href(job)})
    if job.failure is not None:
        raise job.failure
    assert job.summary is not None
    return _result(job.summary)


@router.get("/imports/{job_id}", responses={404: {"description": "No such import (or not yours).", **PROBLEM}})
async def import_job(request: Request, principal: Liaison, job_id: Annotated[str, Path(max_length=40)]) -> ImportJob:
    """An import that went on in the background: rows read so far, then its result (or why it was refused).
    Any web process answers it, for an hour after it ends."""
    job = jobs_of(request.app.state).find(job_id, principal.actor)
    if job is None:
        raise NotFound(UNKNOWN_JOB)
    return _job(job)


def _href(job: Any) -> str:
    return f"/api/v1/subscribers/imports/{job.id}"


def _job(job: Any) -> ImportJob:
    state = "running" if not job.done else "failed" if job.error is not None else "done"
    result = _result(job.summary) if job.summary is not None else None
    return ImportJob(id=job.id, state=state, file=job.name, rows_read=job.rows, href=_href(job), result=result,
                     error=job.error)  # fmt: skip


def _result(summary: ImportSummary) -> ImportResult:
    shown = {k: v for k, v in summary.to_json().items() if k != "rejects_file"}
    return ImportResult(**shown, rejects=_rejects(summary.rejects_file))


def _rejects(path: FilePath | None) -> list[RejectedRow]:
    """The first rows of the rejects file (row, number as written, reason), numbers masked."""
    if path is None:
        return []
    found = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle)
        next(rows, None)  # the header
        for row, value, reason in rows:
            found.append(RejectedRow(row=int(row), msisdn=mask_digits(value), reason=reason))
            if len(found) == SHOWN_REJECTS:
                break
    return found
