"""Request checks: what vLLM would accept, and the fields the gateway relies on.

Each check raises `Violation` with what is wrong; the checking front end answers it with a 400
and records it, so a test fails both at the gateway and in the stand-in's record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.vllm_standin.answers import PRM_MODEL, PRM_STEP_TAG

__all__ = [
    "CHAT_FIELDS",
    "COMPLETION_FIELDS",
    "Violation",
    "check",
    "check_chat",
    "check_classify",
    "check_completion",
    "check_pooling",
    "check_tokenize",
]

_GENERATION_FIELDS = {
    "model",
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "return_token_ids",
    "stop",
    "include_stop_str_in_output",
    "seed",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "structured_outputs",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "stop_token_ids",
    # vLLM's own, which the gateway forwards from its clients as they came.
    "add_special_tokens",
    "allowed_token_ids",
    "bad_words",
    "cache_salt",
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
# vLLM's structured_outputs: exactly one constraint; the gateway sends these two.
_CONSTRAINTS = {"json", "json_object", "regex", "choice", "grammar", "structural_tag"}
CHAT_FIELDS = _GENERATION_FIELDS | {
    "messages",
    "continue_final_message",
    "add_generation_prompt",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template",
    "chat_template_kwargs",
    "documents",
    "reasoning_effort",
}
COMPLETION_FIELDS = _GENERATION_FIELDS | {"prompt", "echo"}
_PENALTIES = ("min_p", "frequency_penalty", "presence_penalty", "repetition_penalty")


class Violation(Exception):
    """A request vLLM would not accept, or one that misses a field the gateway relies on."""


def check(condition: bool, message: str) -> None:
    """Raise `Violation(message)` unless `condition` holds."""
    if not condition:
        raise Violation(message)


def _check_generation(body: Mapping[str, Any], allowed: set[str], model: str) -> None:
    check(set(body) <= allowed, f"unexpected fields {sorted(set(body) - allowed)}")
    check(body.get("model") == model, f"model {body.get('model')!r}")
    check(body.get("return_token_ids") is True, "return_token_ids must be true")
    check(isinstance(body.get("n"), int) and body["n"] >= 1, "n must be a positive int")
    check(isinstance(body.get("max_tokens"), int), "max_tokens must be an int")
    if "include_stop_str_in_output" in body:
        check("stop" in body, "include_stop_str_in_output without stop")
    if body.get("stream"):
        check(body.get("stream_options") == {"include_usage": True}, "stream without usage")
    if "structured_outputs" in body:
        constraint = body["structured_outputs"]
        check(isinstance(constraint, dict), "structured_outputs must be an object")
        given = set(constraint) & _CONSTRAINTS
        check(len(given) == 1, f"structured_outputs needs one constraint, got {sorted(given)}")
        if "json" in constraint:
            check(isinstance(constraint["json"], dict | str), "json must be a schema")
        if "json_object" in constraint:
            check(constraint["json_object"] is True, "json_object must be true")
    for name in _PENALTIES:
        if name in body:
            check(isinstance(body[name], int | float), f"{name} must be a number")
    if "top_k" in body:
        check(isinstance(body["top_k"], int), "top_k must be an int")
    if "logit_bias" in body:
        bias = body["logit_bias"]
        check(
            isinstance(bias, dict)
            and all(k.isdigit() and isinstance(v, int | float) for k, v in bias.items()),
            "logit_bias maps token id strings to numbers",
        )
    if "stop_token_ids" in body:
        ids = body["stop_token_ids"]
        check(
            isinstance(ids, list) and all(isinstance(i, int) for i in ids),
            "stop_token_ids must be a list of ints",
        )


def _check_message(message: Mapping[str, Any]) -> None:
    fields = {"role", "content"}
    if message.get("role") == "assistant" and "tool_calls" in message:
        fields.add("tool_calls")
        for call in message["tool_calls"]:
            check(set(call) == {"id", "type", "function"}, f"tool call {call}")
            check(set(call["function"]) == {"name", "arguments"}, f"function {call}")
            check(isinstance(call["function"]["arguments"], str), "arguments as text")
    if message.get("role") == "tool":
        fields.add("tool_call_id")
    if "reasoning" in message:
        # vLLM passes an earlier answer's reasoning to the chat template.
        check(message["role"] == "assistant", "only an assistant turn has reasoning")
        check(isinstance(message["reasoning"], str), "reasoning must be a string")
        fields.add("reasoning")
    check(set(message) == fields, f"message fields {sorted(message)}")
    check(isinstance(message["content"], str), "content must be a string")


def _check_tools(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto" if tools else "none")
    check(choice == "none" or bool(tools), "tool_choice without tools")
    if not tools or choice == "none":
        return
    for tool in tools:
        check(tool.get("type") == "function", "tools are functions")
        check(set(tool["function"]) <= {"name", "description", "parameters", "strict"}, "tool")
    if isinstance(choice, dict):
        check(choice.get("type") == "function", "a named tool_choice is a function")
        name = choice["function"]["name"]
        names = {t["function"]["name"] for t in tools}
        check(name in names, f"tool_choice names {name!r}, not among the tools")


def check_chat(
    body: Mapping[str, Any], model: str, ignored: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """A `/v1/chat/completions` body; its messages. Fields in `ignored` are let through."""
    _check_generation(body, CHAT_FIELDS | ignored, model)
    messages: list[dict[str, Any]] = body.get("messages") or []
    check(isinstance(messages, list) and bool(messages), "messages must be a list")
    for message in messages:
        _check_message(message)
    _check_tools(body)
    if body.get("continue_final_message"):
        check(body.get("add_generation_prompt") is False, "continuing needs no generation prompt")
        check(messages[-1]["role"] == "assistant", "only an assistant turn can be continued")
    return messages


def check_completion(
    body: Mapping[str, Any], model: str, ignored: frozenset[str] = frozenset()
) -> str:
    """A `/v1/completions` body; its prompt. Fields in `ignored` are let through."""
    _check_generation(body, COMPLETION_FIELDS | ignored, model)
    check(isinstance(body.get("prompt"), str), "prompt must be a string")
    prompt: str = body["prompt"]
    return prompt


def check_tokenize(body: Mapping[str, Any], model: str) -> str:
    """A `/tokenize` body (as the gateway counts tokens); its prompt."""
    check(body.get("model") == model, "tokenize without the model")
    check(isinstance(body.get("prompt"), str), "tokenize needs a prompt")
    check(body.get("add_special_tokens") is False, "counting must skip special tokens")
    prompt: str = body["prompt"]
    return prompt


def _inputs(body: Mapping[str, Any]) -> list[str]:
    inputs: list[str] = body.get("input") or []
    check(isinstance(inputs, list) and all(isinstance(t, str) for t in inputs), "input list")
    return inputs


def check_pooling(body: Mapping[str, Any]) -> list[str]:
    """A `/pooling` body for the PRM; its inputs, each with its step tags."""
    check(set(body) <= {"model", "input", "task"}, f"pooling fields {sorted(body)}")
    check(body.get("model") == PRM_MODEL, f"pooling model {body.get('model')!r}")
    check(body.get("task") == "token_classify", "PRMs are pooled with task token_classify")
    inputs = _inputs(body)
    for text in inputs:
        check(PRM_STEP_TAG in text, "every PRM input needs its step tags")
    return inputs


def check_classify(body: Mapping[str, Any]) -> list[str]:
    """A `/classify` body for the ORM; its inputs."""
    check(set(body) <= {"model", "input"}, f"classify fields {sorted(body)}")
    return _inputs(body)
