"""Property-based fuzz of the HTTP service against its own OpenAPI schema (issue #17), with
schemathesis: for every operation, generated requests (with an admin key, so the work behind the
access checks is reached too) never get a 5xx, and every answer conforms to the schema (status
code, content type, headers, body). Bounded: a few examples per operation, the whole fuzz well
under a minute."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
from service_env import config, make_env

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis import checks as C  # noqa: E402

from ruleengine.service import create_app  # noqa: E402

CHECKS = [
    C.not_a_server_error,
    C.status_code_conformance,
    C.content_type_conformance,
    C.response_headers_conformance,
    C.response_schema_conformance,
]


_folder = tempfile.mkdtemp(prefix="ruleengine-fuzz-")
atexit.register(shutil.rmtree, _folder, True)
ENV = make_env(Path(_folder), firms=4)
APP = create_app(config(ENV, request_timeout_s=20))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def fuzz_env():
    from fastapi.testclient import TestClient

    with TestClient(APP) as c:  # one run to explain, replay and aggregate
        r = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            headers=ENV.h("admin", **{"Content-Type": "text/csv"}),
            content=ENV.data.read_bytes(),
        )
        assert r.status_code == 200
    return ENV


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_schema_conformance(case, fuzz_env):
    case.call_and_validate(headers=fuzz_env.h("admin"), checks=CHECKS)
