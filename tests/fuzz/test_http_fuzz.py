"""Schema-driven fuzzing of each HTTP API (Schemathesis, from the OpenAPI document the app
serves): the recommender run as a process (``python -m mpp_recommender``) and the analytics
reports served by uvicorn (``ReportServer``), both on the real servers of the local stack.

For every operation, requests that fit the schema (positive) and requests that break it
(negative: wrong types, out-of-range numbers, bad ids, broken bodies) are sent with a valid
API key. Each answer must come within ``CALL_TIMEOUT_S`` (no hang), never be a 5xx, and, for
a request that fits the schema, match the response schema the document declares. The
examples per operation are bounded so that each API takes well under a minute."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import response_schema_conformance

from mpp.auth import key_entry
from mpp.config import AuthSettings, Settings

# Fixtures of the recommender's process tests: a world of its own (topics, database,
# collections, catalog) and the service started on it with these keys.
from tests.integration.recommender.process import KEY as RECOMMENDER_KEY
from tests.integration.recommender.process import Running
from tests.integration.recommender.process import service as service
from tests.integration.recommender.world import world as world

from .strategies import fuzz

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
# Examples per operation and mode; fewer where one call is slow (a PNG chart is drawn).
EXAMPLES = 40
SLOW_EXAMPLES = 6
SLOW = ("/charts/", "/metrics")
ANALYTICS_KEY = "fuzz-analytics-admin"


@dataclass
class Findings:
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0


def fuzz_api(base_url: str, key: str) -> Findings:
    """Every operation of the API at ``base_url``, both modes; what failed, not raised."""
    headers = {"X-API-Key": key}
    schema = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json", headers=headers, timeout=CALL_TIMEOUT_S
    )
    findings = Findings()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            try:
                _fuzz_operation(operation, mode, base_url, session, headers, findings)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to break: no parameter, no body
            except Exception as failure:  # a failed check, a timeout (a hang), a refused call
                findings.failures.append(f"{operation.label} ({mode.value}): {failure}"[:3000])
    return findings


def _fuzz_operation(
    operation: APIOperation,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    findings: Findings,
) -> None:
    examples = SLOW_EXAMPLES if operation.path.startswith(SLOW) else EXAMPLES
    checks = [not_a_server_error]
    if mode is GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)

    @fuzz(examples)
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        started = time.perf_counter()
        response = case.call(
            base_url=base_url, session=session, headers=headers, timeout=CALL_TIMEOUT_S
        )
        findings.slowest_s = max(findings.slowest_s, time.perf_counter() - started)
        findings.calls[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=checks)

    call()


def _assert_clean(findings: Findings) -> None:
    summary = sorted(findings.calls.items())
    # The calls per operation and status, in the test's log (pytest shows it on a failure).
    for (label, status), count in summary:
        log.info("%s %s: %d", label, status, count)
    log.info("slowest call: %.2f s", findings.slowest_s)
    assert sum(findings.calls.values()) > 50, summary
    assert not findings.failures, "\n\n".join(findings.failures[:5])
    assert not [status for (_, status), _ in summary if status >= 500], summary
    assert findings.slowest_s < CALL_TIMEOUT_S


def test_recommender_http_api_fuzz(service: Running) -> None:
    findings = fuzz_api(service.http, RECOMMENDER_KEY)
    _assert_clean(findings)
    # Both valid calls and refusals happened: the fuzz reached the handlers.
    statuses = {status for _, status in findings.calls}
    assert 200 in statuses and 422 in statuses, sorted(findings.calls.items())


@pytest.fixture
def analytics_base(database_settings: Settings, tmp_path: Path) -> Iterator[str]:
    from mpp_analytics.service import WarehouseSyncer
    from mpp_analytics.web import ReportServer

    settings = database_settings.model_copy(
        update={
            "analytics": database_settings.analytics.model_copy(update={"report_port": 0}),
            "auth": AuthSettings.model_validate(
                {"keys": [key_entry("fuzz", ANALYTICS_KEY, ["admin"])]}
            ),
            "warehouse": database_settings.warehouse.model_copy(
                update={"sqlite_path": tmp_path / "warehouse.sqlite"}
            ),
        }
    )
    server = ReportServer(settings, WarehouseSyncer(settings)).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_analytics_http_api_fuzz(analytics_base: str) -> None:
    findings = fuzz_api(analytics_base, ANALYTICS_KEY)
    _assert_clean(findings)
    statuses = {status for _, status in findings.calls}
    assert 200 in statuses and 422 in statuses, sorted(findings.calls.items())
