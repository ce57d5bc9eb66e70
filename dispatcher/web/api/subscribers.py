"""`/api/v1/subscribers/import`: a CSV or XLSX file uploaded, imported as `canhbao subscribers import` does.

The upload is written to a private temporary folder under its own name (the audit log and the
rejects file are named after it), then given to the same importer as the CLI's. The answer is
the summary and the refused rows, numbers masked; the full rejects file stays where the CLI
writes it (`[subscribers] rejects_dir`).
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path, PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from dispatcher.errors import CanhBaoError
from dispatcher.phones import mask_digits
from dispatcher.subscribers import ImportSummary, importer_for
from dispatcher.web import i18n
from dispatcher.web.api import problems
from dispatcher.web.api.schemas import ImportResult, RejectedRow
from dispatcher.web.auth import Principal, allow
from dispatcher.web.deps import regions
from dispatcher.web.imports import TooLarge, copy_upload, declared_too_large, too_large, upload_limit

router = APIRouter(prefix="/subscribers", tags=["subscribers"])
Liaison = Annotated[Principal, allow("liaison")]
SHOWN_REJECTS = 1_000


TOO_LARGE = {
    413: {
        "description": "The file is over `[web] import_max_mb`: nothing was imported.",
        "content": {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}


@router.post("/import", response_model=ImportResult, responses=TOO_LARGE)  # type: ignore[arg-type]
async def import_subscribers(
    request: Request,
    principal: Liaison,
    file: Annotated[UploadFile, File(description="CSV (UTF-8, UTF-16 or Windows-1258) or XLSX")],
) -> Any:
    """Add new numbers and update known ones; refused rows are listed with the reason. The file's size is
    limited by `[web] import_max_mb` (413, nothing stored)."""
    state, index = request.app.state, regions(request)
    name = PurePath((file.filename or "").replace("\\", "/")).name or "tep-tai-len.csv"
    web, _ = state.settings.web, i18n.translator(i18n.api_language(request))
    if declared_too_large(request):
        return problems.problem(request, 413, "too_large", too_large(_, web))
    with tempfile.TemporaryDirectory(prefix="canhbao-import-") as folder:
        path = Path(folder) / name
        try:
            await run_in_threadpool(copy_upload, file.file, path, upload_limit(web))
        except TooLarge:
            return problems.problem(request, 413, "too_large", too_large(_, web))
        importer = importer_for(state.engine, index, state.settings.subscribers)
        try:
            summary = await run_in_threadpool(lambda: importer.import_file(path, state.clock(), actor=principal.actor))
        except CanhBaoError as exc:  # its message names the file by our temporary path: name it as sent
            exc.args = (str(exc).replace(f"{folder}/", ""),)
            raise
    return _result(summary)


def _result(summary: ImportSummary) -> ImportResult:
    shown = {k: v for k, v in summary.to_json().items() if k != "rejects_file"}
    return ImportResult(**shown, rejects=_rejects(summary.rejects_file))


def _rejects(path: Path | None) -> list[RejectedRow]:
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
