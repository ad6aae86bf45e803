"""Bad input, fuzzed: schemathesis generates requests from the server's own OpenAPI schema,
valid and not, and sends them to the app (lifespan and all) around a scripted backend.

No request may get a 5xx, and every 4xx must be an OpenAI error object. Bounded to a few
hundred cases, derandomised, so a run is repeatable and quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.settings import LimitsSettings, Settings

_KEY = "sk-fuzz-key"
_KEYS = str(Path(__file__).with_name("fuzz-keys.yaml"))

# Small limits, so that generated sizes stay cheap and many requests hit a ceiling.
LIMITS = LimitsSettings(max_n=4, max_tokens=64, default_max_tokens=16, search_default_tokens=64)


def fuzzed(app: FastAPI) -> OpenApiSchema:
    """The app's own OpenAPI schema, generating valid and invalid requests."""
    made = schemathesis.openapi.from_asgi("/openapi.json", app)
    made.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    return made


def assert_no_server_error(case: Any, response: Any) -> None:
    """No 5xx, and every refusal an OpenAI error object with a message."""
    status = response.status_code
    assert status < 500, f"{case.method} {case.path} -> {status}: {response.text[:500]}"
    if status >= 400:
        body = json.loads(response.text)
        error = body.get("error")
        assert isinstance(error, dict), body
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]


app = create_app(Settings(limits=LIMITS), backend=ScriptedBackend(["The answer is 4."]))
schema = fuzzed(app)


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error_and_every_refusal_is_an_openai_error(case: Any) -> None:
    assert_no_server_error(case, case.call())


# The same, with keys on: every route that reaches a backend (chat, completions, the Responses
# API, the tokenizer routes) then also passes through auth, admission and a key's limits.
KEYED = create_app(
    Settings(limits=LIMITS, api_keys=SecretStr(_KEYS)), backend=ScriptedBackend(["4"])
)
keyed_schema = fuzzed(KEYED)


@keyed_schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_with_keys_no_input_gets_a_server_error(case: Any) -> None:
    assert_no_server_error(case, case.call(headers={"Authorization": f"Bearer {_KEY}"}))
