"""Schemathesis against /openapi.json: generated calls to every operation find no 5xx and no answer off the schema.

The operations are walked in one test with hypothesis directly (schemathesis 4.32's pytest
plugin does not run under this pytest); a failure names the operation and the call that broke.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode
from sqlalchemy import Engine

from dispatcher import users
from dispatcher.config import load_settings
from tests.clock import Clock
from tests.web_helpers import ensure_user, make_app
from tests.world import catalogue

# A few examples an operation keep the run under a minute on a loaded machine.
EXAMPLES = 5
# Invalid calls are sent too (negative mode) for the 5xx and the problem documents they get back;
# whether the API refuses every one is not asked: unknown query parameters are ignored, as HTTP does.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_api_answers_within_its_schema(sqlite_engine: Engine, now: datetime, tmp_path: Path, regions) -> None:
    """No operation answers 5xx, an undocumented status or media type, or a body its schema does not allow."""
    environ = {"CANHBAO_CATALOGUE__MESSAGES_DIR": str(tmp_path / "messages"),
               "CANHBAO_SUBSCRIBERS__REJECTS_DIR": str(tmp_path / "rejects")}  # fmt: skip
    app = make_app(load_settings(None, environ), sqlite_engine, Clock(now))
    app.state.regions = regions
    catalogue(sqlite_engine, now, ["gia-danh-cong-an-goi-video"])
    ensure_user(sqlite_engine, "may-kiem-thu", *users.ROLES, now=now)  # every route lets it in
    with sqlite_engine.begin() as conn:
        _id, token = users.issue_token(conn, now, "test", "may-kiem-thu", "schemathesis")
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schemathesis.openapi.from_asgi("/openapi.json", app).get_all_operations()]
    assert len(operations) == 21
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _exercise(operation, mode, headers)


def _exercise(operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()
