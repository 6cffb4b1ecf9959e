"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis + hypothesis).

Every operation gets generated requests, valid ones and invalid ones, sent with valid
credentials to an app holding some data. No response may be a 5xx, and every response must
match the document: a declared status code, the declared content type and the declared schema
(error bodies included).

The strategies are used with hypothesis directly (``APIOperation.as_strategy``) rather than
through schemathesis's pytest plugin, whose lazy fixture loader does not run on pytest 9.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kalibr_core import Intelligence
from kalibr_core.service import create_app

KEY = "fuzz-key"
HEADERS = {"X-API-Key": KEY, "X-Tenant-ID": "fuzz"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 15


def _operations() -> list[str]:
    with Intelligence(":memory:") as intel:
        document = create_app(intel).openapi()
    return sorted(
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    )


@pytest.fixture(scope="module")
def fuzz_schema() -> Iterator[schemathesis.BaseSchema]:
    intel = Intelligence(":memory:", seed=7)
    for goal in ("a", "b"):
        for model in ("gpt-4o", "claude-x"):
            intel.register_path(goal, model, tenant="fuzz")
            intel.report_outcome(f"t-{model}", goal, success=True, model_id=model, tenant="fuzz")
    app = create_app(intel, bootstrap_key=KEY, bootstrap_tenant="fuzz")
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    intel.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", _operations())
def test_api_never_fails_and_matches_its_document(fuzz_schema, label, mode):
    if mode is GenerationMode.NEGATIVE and label.endswith("/health"):
        pytest.skip("health takes no input: there is nothing to make invalid")
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        case.call_and_validate(headers=HEADERS, checks=CHECKS)

    check()
