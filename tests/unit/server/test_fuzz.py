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
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis import GenerationMode

from backends.scripted import ScriptedBackend
from server.app import create_app
from server.settings import LimitsSettings, Settings

_KEY = "sk-fuzz-key"
_KEYS = str(Path(__file__).with_name("fuzz-keys.yaml"))

# Small limits, so that generated sizes stay cheap and many requests hit a ceiling.
LIMITS = LimitsSettings(max_n=4, max_tokens=64, default_max_tokens=16, search_default_tokens=64)
app = create_app(Settings(limits=LIMITS), backend=ScriptedBackend(["The answer is 4."]))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error_and_every_refusal_is_an_openai_error(case: Any) -> None:
    response = case.call()
    status = response.status_code
    assert status < 500, f"{case.method} {case.path} -> {status}: {response.text[:500]}"
    if status >= 400:
        body = json.loads(response.text)
        error = body.get("error")
        assert isinstance(error, dict), body
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]


# The same, with keys on: every route that reaches a backend (chat, completions, the Responses
# API, the tokenizer routes) then also passes through auth, admission and a key's limits.
KEYED = create_app(
    Settings(limits=LIMITS, api_keys=SecretStr(_KEYS)), backend=ScriptedBackend(["4"])
)
keyed_schema = schemathesis.openapi.from_asgi("/openapi.json", KEYED)
keyed_schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@keyed_schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_with_keys_no_input_gets_a_server_error(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {_KEY}"})
    status = response.status_code
    assert status < 500, f"{case.method} {case.path} -> {status}: {response.text[:500]}"
    if status >= 400:
        error = json.loads(response.text).get("error")
        assert isinstance(error, dict) and set(error) >= {"message", "type", "param", "code"}
