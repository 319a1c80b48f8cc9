"""A property-based fuzz run of the whole REST API against the real server (uvicorn on
127.0.0.1, real models, a SQLite store in tmp), with schemathesis.

Every operation of the OpenAPI schema gets requests that fit the schema (positive) and
requests that do not (negative), always with the right admin Bearer token (a wrong one
would count towards the lockout). Checked on every answer: no 5xx, the status code is one
the schema documents, the media type is the documented one, the body and the headers
match the documented schema, and (negative requests) invalid data is refused with 4xx.
Bounded: ``EXAMPLES`` per operation and mode, ``TIME_CAP_S`` in all (both can be raised
with ``MASKWATCH_FUZZ_EXAMPLES`` and ``MASKWATCH_FUZZ_TIME_CAP_S`` for a longer run).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.web.browser import running_server
from tests.web.conftest import BEARER, PASSWORD

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

log = logging.getLogger(__name__)

#: Examples per operation and generation mode (positive, negative); more for a longer run.
EXAMPLES = int(os.environ.get("MASKWATCH_FUZZ_EXAMPLES", "25"))
#: The whole run stops generating after this many seconds (2 cores shared with other work).
TIME_CAP_S = float(os.environ.get("MASKWATCH_FUZZ_TIME_CAP_S", "300"))
#: Seconds a single request may take.
REQUEST_TIMEOUT_S = 20.0
#: Where any source the fuzzer adds points: a closed port on this machine (never the network).
SAFE_URL = "http://127.0.0.1:9/fuzz"


def _safe_source_body(case) -> None:  # noqa: ANN001 - a schemathesis Case
    """Server sources must stay on this machine: a generated URL or camera becomes SAFE_URL."""
    import re

    body = case.body
    if isinstance(body, dict) and isinstance(body.get("spec"), str):
        spec = body["spec"].strip()
        if re.fullmatch(r"(?i)(camera:)?\d{1,3}|[a-z][a-z0-9+.-]*://\S+", spec):
            body["spec"] = SAFE_URL


def _call_and_check(case, session, base_url: str, checks: list,  # noqa: ANN001
                    statuses: Counter[int]) -> None:
    """Send one generated request with the right admin token and check its answer."""
    if case.operation.method.upper() == "POST" and case.operation.path == "/api/sources":
        _safe_source_body(case)
    response = case.call(session=session, headers=dict(BEARER), timeout=REQUEST_TIMEOUT_S)
    statuses[response.status_code] += 1
    if response.status_code == 201 and case.operation.path == "/api/sources":
        # no running source left behind (its MJPEG stream would wait for frames)
        sid = response.json()["id"]
        session.delete(f"{base_url}/api/sources/{sid}", headers=BEARER, timeout=10)
    case.validate_response(response, checks=checks, headers=dict(BEARER))


def _one_case(session, base_url: str, checks: list, statuses: Counter[int]):  # noqa: ANN001, ANN202
    """The body of one hypothesis run: a function of the generated case only."""

    def run(case) -> None:  # noqa: ANN001
        _call_and_check(case, session, base_url, checks, statuses)

    return run


@pytest.mark.slow
def test_fuzz_every_api_route(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    names = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
             "response_headers_conformance", "response_schema_conformance"]
    positive_checks = [CHECKS.get_one(n) for n in names]
    negative_checks = [*positive_checks, CHECKS.get_one("negative_data_rejection")]
    bounded = settings(max_examples=EXAMPLES, deadline=None, database=None,
                       phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
                       suppress_health_check=list(HealthCheck))

    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    statuses: Counter[int] = Counter()
    failures: dict[str, str] = {}
    done: list[str] = []
    unsatisfiable: list[str] = []
    args = ("-q", "--max-upload-mb", "1", "--max-pixels", "4000000")
    with running_server(home, PASSWORD, *args) as server:
        import requests

        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        session = requests.Session()
        operations = [r.ok() for r in schema.get_all_operations()]
        assert len(operations) >= 17, [op.label for op in operations]
        for op in operations:
            for mode, checks in ((GenerationMode.POSITIVE, positive_checks),
                                 (GenerationMode.NEGATIVE, negative_checks)):
                label = f"{op.label} ({mode.value})"
                if time.monotonic() - started > TIME_CAP_S:
                    failures[label] = f"not run: the {TIME_CAP_S:.0f} s cap was reached"
                    continue
                run = bounded(given(case=op.as_strategy(generation_mode=mode))(
                    _one_case(session, server.url, checks, statuses)))
                try:
                    run()
                except Unsatisfiable:
                    # nothing to make invalid (no parameters, or none that a request can
                    # break): the positive run covered the operation
                    unsatisfiable.append(label)
                    continue
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported below
                    failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
                done.append(label)
        assert session.get(server.url + "/api/health", timeout=10).status_code == 200
    wall = time.monotonic() - started
    summary = (f"{len(operations)} operations, {len(done)} runs ({len(unsatisfiable)} without "
               f"invalid data to make), {sum(statuses.values())} requests in {wall:.0f} s; "
               f"statuses {dict(sorted(statuses.items()))}; {len(failures)} failing")
    print(summary)
    log.info(summary)
    assert not [s for s in statuses if s >= 500], summary
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
