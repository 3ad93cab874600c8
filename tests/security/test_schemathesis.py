"""Schema-driven testing: schemathesis against the live ``auth/schema``.

A real server (uvicorn, the demo's production settings, DEBUG off) serves its
OpenAPI schema; schemathesis generates requests for every documented operation
and runs its checks on every answer: no 5xx, the status code and content type
are documented, the body and headers match the documented schema.  Operations
that need a credential are called with a fresh copilot token (minted through the
API key route) half the time, so their 2xx paths are checked too.

Examples are bounded; the operations and checks run are printed (``-s``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from tests.servers import Server, manage, migrate, server_env, start_server

pytestmark = pytest.mark.timeout(170)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.unsupported_method,
]
RUN: Counter[str] = Counter()


@dataclass
class Live:
    server: Server
    api_key: str

    def copilot_token(self) -> str:
        response = httpx.post(
            f"{self.server.url}/auth/copilot/token",
            json={"identifier": "schema-user"},
            headers={"Authorization": f"Api-Key {self.api_key}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    env = server_env(DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}")
    migrate(env)
    key = manage(env, "chatauth_apikey", "create", "schemathesis").strip()
    server = start_server(env, tmp)
    yield Live(server, key)
    server.stop()
    print("\nschemathesis cases per operation:")
    for operation, count in sorted(RUN.items()):
        print(f"  {operation:40} {count}")
    print("checks:", ", ".join(check.__name__ for check in CHECKS))
    output = server.output()
    assert "Traceback" not in output, output
    assert " 500 " not in output, output


#: Every operation docs/http-api.md documents, the OpenID provider's back-channel
#: logout among them (the schema must list exactly these).
OPERATIONS = [
    "GET /auth/config",
    "POST /auth/login",
    "POST /auth/header",
    "GET /auth/oauth/{provider}",
    "GET /auth/oauth/{provider}/callback",
    "POST /auth/oauth/{provider}/backchannel-logout",
    "POST /auth/token/refresh",
    "POST /auth/copilot/token",
    "GET /auth/me",
    "POST /auth/logout",
    "GET /auth/sessions",
    "DELETE /auth/sessions/{session_id}",
]
AUTHENTICATED = {
    "GET /auth/me",
    "POST /auth/logout",
    "GET /auth/sessions",
    "DELETE /auth/sessions/{session_id}",
}
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 15}
#: Operations with an input that can be made invalid (a body, a typed parameter);
#: the others (no body, free-form strings) have no negative cases to generate.
NEGATABLE = {
    "POST /auth/login",
    "POST /auth/oauth/{provider}/backchannel-logout",
    "POST /auth/token/refresh",
    "POST /auth/copilot/token",
    "POST /auth/logout",
    "DELETE /auth/sessions/{session_id}",
}
CASES = [
    pytest.param(label, mode, id=f"{label}-{mode}")
    for label in OPERATIONS
    for mode in EXAMPLES
    if mode == GenerationMode.POSITIVE or label in NEGATABLE
]


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live.server.url}/auth/schema")


def test_schema_documents_every_route(api_schema):
    documented = [
        f"{method.upper()} {path}"
        for path, methods in api_schema.raw_schema["paths"].items()
        for method in methods
    ]
    assert sorted(documented) == sorted(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_operation_conforms(api_schema, live, label, mode):
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    rng = random.Random(label + mode)  # noqa: S311 - which cases carry a credential

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a red CI is reproducible
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        RUN[f"{label} ({mode})"] += 1
        headers = {}
        if label in AUTHENTICATED and rng.random() < 0.5:
            headers["Authorization"] = f"Bearer {live.copilot_token()}"
        elif path == "/auth/copilot/token" and rng.random() < 0.5:
            headers["Authorization"] = f"Api-Key {live.api_key}"
        response = case.call(base_url=live.server.url, headers=headers, timeout=30)
        if mode == GenerationMode.NEGATIVE and response.status_code == 413:
            # An oversized invalid body is refused before it is parsed: 413 is
            # that refusal (documented), which schemathesis' list of "rejection"
            # codes happens to leave out.
            assert response.json() == {"detail": "Request body is too large."}
            return
        case.validate_response(response, checks=CHECKS)

    run()
