"""Property-based fuzzing of the published OpenAPI schema (schemathesis, in-process ASGI app, with a key):
whatever a client sends that the schema allows, or nearly allows, the API never answers 5xx.

The operations are driven through their Hypothesis strategies directly: schemathesis 4.32's pytest loader
(``schemathesis.pytest.from_fixture``) fails under pytest 9 (``'Function' object has no attribute
'_nodeid'``), and a module-level schema would need the trained model at import time.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import Trained

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 100  # per operation and generation mode


def _fuzz(
    operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str]
) -> Counter[int]:
    """Run one operation's strategy; returns the status codes answered (raises on a 5xx)."""
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
        statuses[response.status_code] += 1
        assert response.status_code < 500, case.as_curl_command(headers=headers)

    run()
    return statuses


def test_no_generated_request_makes_the_api_fail(trained: Trained) -> None:
    # Negative cases drop the key now and then: with the failed-authentication throttle on, most later
    # requests would be answered 429 before validation, and the fuzzing would test the throttle only.
    app = create_app(ServingSettings(auth_failure_burst=0))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {trained.api_key}"}
    results = list(schema.get_all_operations())
    assert [r.err() for r in results if isinstance(r, Err)] == [], "operations the schema fails to describe"
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    labels = {op.label for op in operations}
    assert {
        "POST /v1/score",
        "POST /v1/customers/score",
        "GET /v1/customers/{customer_id}",
        "GET /v1/model",
    } <= labels
    failures: dict[str, str] = {}
    sent: dict[str, Counter[int]] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                statuses = _fuzz(operation, mode, headers)
            except Unsatisfiable:  # no input to get wrong (GET /health): nothing negative to send
                assert mode is GenerationMode.NEGATIVE and not operation.label.startswith(
                    ("GET /v1/", "POST")
                ), operation.label
                continue
            except Exception as exc:  # keep fuzzing the others; every failure is reported below
                failures[f"{operation.label} ({mode.value})"] = str(exc)[-3000:]
                continue
            sent[f"{operation.label} ({mode.value})"] = statuses
    total = sum(sum(c.values()) for c in sent.values())
    print(f"\nschemathesis: {len(operations)} operations, {total} requests, {len(failures)} failing")
    for label, statuses in sorted(sent.items()):
        print(f"  {label:<45} {dict(sorted(statuses.items()))}")
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert {f"{label} (positive)" for label in labels} <= set(sent)  # every operation really got requests
    assert all(
        sent[f"{label} (negative)"].total() > 0 for label in labels if label.startswith(("GET /v1/", "POST"))
    )
    # The key is accepted and valid requests get through to the model and the store, not just to validation.
    assert sent["POST /v1/score (positive)"][200] > 0 and sent["GET /v1/model (positive)"][200] > 0
    assert sent["POST /v1/customers/score (positive)"][200] > 0
    assert not any(statuses[429] for statuses in sent.values())
