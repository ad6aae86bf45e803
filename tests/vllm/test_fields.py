"""Every field of the installed vLLM's chat and completion requests is classified by this server
(`server.protocol.vllm_fields`): applied, forwarded on every backend call, or refused unless
left unused. A vLLM release that adds a field fails here until it is classified."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from server.protocol.vllm_fields import APPLIED, FORWARDED, REFUSED

pytestmark = pytest.mark.vllm

# Read in a process of its own: importing vLLM warns (torch deprecations), which this suite
# treats as errors, and loads far more than its request models.
_READ_FIELDS = """
import json
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest

def described(info):
    if info.is_required():
        return [True, None, None]
    default = info.get_default(call_default_factory=True)
    plain = isinstance(default, (bool, int, float, str, type(None), list, dict))
    return [False, repr(default), default if plain else None]

models = {"ChatCompletionRequest": ChatCompletionRequest, "CompletionRequest": CompletionRequest}
print(json.dumps({
    name: {field: described(info) for field, info in model.model_fields.items()}
    for name, model in models.items()
}))
"""


@pytest.fixture(scope="module")
def vllm_fields() -> dict[str, dict[str, list[Any]]]:
    """Each request model's fields: whether required, and the default (as JSON, where it is)."""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _READ_FIELDS],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    fields: dict[str, dict[str, list[Any]]] = json.loads(out.strip().splitlines()[-1])
    return fields


@pytest.mark.parametrize("request_model", ["ChatCompletionRequest", "CompletionRequest"])
def test_every_field_of_vllms_requests_is_classified(
    vllm_fields: dict[str, dict[str, list[Any]]], request_model: str
) -> None:
    known = APPLIED | FORWARDED | REFUSED.keys()
    unclassified = sorted(set(vllm_fields[request_model]) - known)
    assert len(vllm_fields[request_model]) > 40
    assert unclassified == [], (
        f"{request_model} has fields this server neither applies, forwards nor "
        f"refuses: {unclassified}; classify them in server/protocol/vllm_fields.py"
    )


def test_the_classes_do_not_overlap_but_where_meant_to() -> None:
    # The effort is read here (the default n and max_tokens) and forwarded to the model too.
    assert APPLIED & FORWARDED == {"reasoning_effort"}
    assert not (APPLIED | FORWARDED) & REFUSED.keys()


def test_refused_fields_are_refused_at_vllms_own_defaults_never(
    vllm_fields: dict[str, dict[str, list[Any]]],
) -> None:
    # A client that sends every field at vLLM's default (some SDKs do) is not refused.
    for fields in vllm_fields.values():
        for name, (required, shown, default) in fields.items():
            # request_id's default is a fresh random id: any id a client sends is refused.
            if name in REFUSED and not required and name != "request_id":
                assert REFUSED[name][0](default), f"{name}'s default {shown} is refused"
