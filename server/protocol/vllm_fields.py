"""What this server does with every field of vLLM's chat and completion requests.

A client that speaks vLLM's API may send any field of its `ChatCompletionRequest` and
`CompletionRequest`. None is dropped in silence: each is

- **applied** here: read by the request models (`server.protocol.chat`, `.completions`) and
  honoured by the strategies, which make their own backend calls from it;
- **passed**: forwarded as it is on every backend call the request makes (`FORWARDED`), for
  vLLM to apply; the embedded backend honours those it can and refuses the others;
- **refused** unless left at the value that means "not used" (`REFUSED`): a 400 naming the
  field, saying why.

`tests/vllm/test_fields.py` reads the field lists of the vLLM release the tests install and
fails on a field not classified here, so an upgrade that adds one shows up at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.protocol.errors import InvalidRequest

__all__ = ["APPLIED", "FORWARDED", "REFUSED", "forwarded_fields", "refuse_unsupported"]

# Read by this server's request models and applied by it (or its strategies).
APPLIED: frozenset[str] = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "seed",
        "stop",
        "stop_token_ids",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "echo",
        "suffix",
        # Derived from the conversation: an assistant last turn is continued, as vLLM does.
        "add_generation_prompt",
        "continue_final_message",
        # Sizes this server's defaults, and is forwarded too (FORWARDED).
        "reasoning_effort",
        # The server caps each candidate's thinking itself (budget forcing), on any backend.
        "thinking_token_budget",
        # Whether the response shows the thinking; the server always reads it.
        "include_reasoning",
        # The chat template's own arguments: on the prompt, for every backend to render with.
        "chat_template_kwargs",
    }
)

# Forwarded untouched on every backend call of the request.
FORWARDED: frozenset[str] = frozenset(
    {
        "reasoning_effort",
        "add_special_tokens",
        "allowed_token_ids",
        "bad_words",
        "cache_salt",
        "chat_template",
        "documents",
        "ignore_eos",
        "min_tokens",
        "priority",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "stream_interval",
        "user",
        "vllm_xargs",
        "watermarking",
    }
)


def _unset(value: Any) -> bool:
    return value is None


def _is(neutral: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or value == neutral


# Refused unless at the value that means "not used", with why.
REFUSED: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "best_of": (_is(1), "use reasoning_strategy best_of_n"),
    "use_beam_search": (_is(False), "use reasoning_strategy beam_search"),
    "length_penalty": (_is(1.0), "it applies to vLLM's beam search, which is not used"),
    "functions": (lambda v: not v, "use tools"),
    "function_call": (lambda v: v in (None, "none"), "use tool_choice"),
    "include_stop_str_in_output": (
        _is(False),
        "the server sets it per call (searches keep their step separators)",
    ),
    "request_id": (_unset, "send the X-Request-Id header; every backend call gets its own id"),
    "session_id": (_unset, "the server routes a request's calls to one replica itself"),
    "return_token_ids": (_unset, "the server asks for token ids on every call itself"),
    "return_tokens_as_token_ids": (_unset, "tokens are returned as text"),
    "return_token_offsets": (_is(False), "not returned by this server"),
    "return_prompt_text": (_unset, "not returned by this server"),
    "return_mm_kwargs": (_unset, "this server takes text only"),
    "prompt_logprobs": (_unset, "use /v1/completions with echo and logprobs"),
    "prompt_embeds": (_unset, "this server takes text or token ids"),
    "logprob_token_ids": (_unset, "not returned by this server"),
    "structured_outputs": (_unset, "use response_format (json_object or json_schema)"),
    "truncate_prompt_tokens": (
        _unset,
        "truncating a prompt would cut the prefixes strategies continue",
    ),
    "truncation_side": (_unset, "truncating a prompt would cut the prefixes strategies continue"),
    "repetition_detection": (_unset, "not supported by this server"),
    "routed_experts_prompt_start": (_is(0), "not supported by this server"),
    "kv_transfer_params": (_unset, "disaggregated serving is the router's, not a client's"),
    "ec_transfer_params": (_unset, "disaggregated serving is the router's, not a client's"),
    "media_io_kwargs": (_unset, "this server takes text only"),
    "mm_processor_kwargs": (_unset, "this server takes text only"),
    "mm_payload": (_is("tensors"), "this server takes text only"),
}


def refuse_unsupported(extra: Mapping[str, Any]) -> None:
    """A 400 naming the first field of `extra` (what the request models did not read) that is
    refused and set to something other than its "not used" value."""
    for name, value in extra.items():
        rule = REFUSED.get(name)
        if rule is not None and not rule[0](value):
            raise InvalidRequest(f"{name} is not supported by this server: {rule[1]}", name)


def forwarded_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `fields` forwarded to every backend call, those set (not None)."""
    return {k: v for k, v in fields.items() if k in FORWARDED and v is not None}
