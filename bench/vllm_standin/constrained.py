"""What the stand-in's model writes under a constraint: a tool call, or JSON of a schema.

Tools: with `tools` and a `tool_choice` that forces a call (or `auto` when the last message is
a user's containing CALL), it answers as vLLM's tool parser does: one call of the named (or
first) function, arguments filled from its schema (`tool_call_arguments`), finish_reason
`tool_calls` (`stop` for a named function, as OpenAI's); streamed as vLLM streams calls, the
name first, then the arguments in two pieces.

Structured outputs: the answer is a JSON instance of the schema (`json`) or a small JSON object
(`json_object`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bench.vllm_standin.answers import count_tokens, envelope, usage_payload

__all__ = [
    "chosen_function",
    "schema_instance",
    "structured_text",
    "tool_call",
    "tool_call_arguments",
    "tool_call_chunks",
    "tool_call_payload",
]

_SCHEMA_EXAMPLES: dict[str, Any] = {
    "string": "Paris",
    "number": 1.5,
    "integer": 3,
    "boolean": True,
    "array": [],
    "object": {},
}


def tool_call_arguments(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments the stand-in calls a function with: an example value per property."""
    properties = (parameters or {}).get("properties") or {}
    return {name: _SCHEMA_EXAMPLES.get(p.get("type"), "x") for name, p in properties.items()}


def chosen_function(
    body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], str] | None:
    """The function vLLM's parser would return a call of, and the finish reason; None for text.
    The request's tools are taken as checked."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto" if tools else "none")
    if not tools or choice == "none":
        return None
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    if isinstance(choice, dict):
        return by_name[choice["function"]["name"]], "stop"
    last = messages[-1]
    if choice == "required" or (last["role"] == "user" and "CALL" in last["content"]):
        return next(iter(by_name.values())), "tool_calls"
    return None


def tool_call(function: Mapping[str, Any], number: int) -> dict[str, Any]:
    """The `number`-th call the stand-in makes, of `function`."""
    arguments = json.dumps(tool_call_arguments(function.get("parameters")))
    return {
        "id": f"chatcmpl-tool-{number}",
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments},
    }


def _call_tokens(calls: Sequence[Mapping[str, Any]]) -> int:
    # The call's tokens, as the model wrote them: its JSON, word by word.
    return sum(count_tokens(json.dumps(c["function"])) for c in calls)


def tool_call_payload(
    model: str, n: int, prompt_tokens: int, calls: list[dict[str, Any]], finish: str
) -> dict[str, Any]:
    """A chat completion whose `n` choices each make `calls`."""
    tokens = _call_tokens(calls)
    message = {"role": "assistant", "content": None, "reasoning": None, "tool_calls": calls}
    choices = [
        {
            "index": i,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
            "token_ids": list(range(tokens)),
        }
        for i in range(n)
    ]
    return envelope(
        "chat.completion", model, choices, usage=usage_payload(prompt_tokens, n * tokens)
    )


def tool_call_chunks(
    model: str, n: int, prompt_tokens: int, calls: list[dict[str, Any]], finish: str
) -> list[dict[str, Any]]:
    """The same streamed: per choice a role chunk, each call's name, its arguments in two
    pieces, the rest of its tokens with the finish reason; then the usage."""
    tokens = _call_tokens(calls)

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return envelope("chat.completion.chunk", model, choices, **extra)

    chunks = []
    for i in range(n):
        chunks.append(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}}]))
        for k, call in enumerate(calls):
            head = {
                "index": k,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"]},
            }
            chunks.append(chunk([{"index": i, "delta": {"tool_calls": [head]}, "token_ids": [0]}]))
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                delta = {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
                chunks.append(chunk([{"index": i, "delta": delta, "token_ids": [0]}]))
        rest = [0] * max(0, tokens - 3 * len(calls))
        chunks.append(
            chunk([{"index": i, "delta": {}, "token_ids": rest, "finish_reason": finish}])
        )
    chunks.append(chunk([], usage=usage_payload(prompt_tokens, n * tokens)))
    return chunks


def schema_instance(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """A JSON value valid for `schema` (the subset pydantic models produce): what a grammar
    would let the model write."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return schema_instance(root.get("$defs", {})[name], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return schema_instance(schema[key][0], root)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {k: schema_instance(v, root) for k, v in properties.items()} or {"answer": "7"}
    if kind == "array":
        return [schema_instance(schema.get("items", {"type": "string"}), root)]
    return {"string": "7", "integer": 7, "number": 7.5, "boolean": True, "null": None}[kind]


def structured_text(constraint: Mapping[str, Any]) -> str:
    """What the model writes under `structured_outputs`: JSON of the schema, or a small object."""
    schema = constraint.get("json")
    schema = json.loads(schema) if isinstance(schema, str) else schema
    value = {"answer": "7"} if schema is None else schema_instance(schema, schema)
    return json.dumps(value, separators=(", ", ": "))
