"""The bodies of the calls a vLLM session makes, as vLLM's OpenAI-compatible API takes them.

Calls used (vLLM's extensions to OpenAI's fields are marked *):
- `POST /v1/chat/completions`: chat prompts; continuation of an assistant turn with
  `continue_final_message`* and `add_generation_prompt`*=false; `tools`, `tool_choice` and
  `parallel_tool_calls` as OpenAI's, which vLLM parses calls for only when started with
  `--enable-auto-tool-choice --tool-call-parser <name>` (a forced choice needs neither).
- `POST /v1/completions`: raw prompts; `echo` with `logprobs` for the log-probabilities of
  given text.
- `POST /tokenize`* and `POST /detokenize`*: rendering a chat template, counting tokens.
Every generation asks for `return_token_ids`* so each sample's token count is exact, and
`include_stop_str_in_output`* when the caller keeps stop strings. A constrained output form goes
as `structured_outputs`* (`json` or `json_object`), the sampling fields as vLLM names them
(`top_k`*, `min_p`*, `repetition_penalty`*, `stop_token_ids`* among them), a chat prompt's
template arguments as `chat_template_kwargs`*, and the vLLM fields a client sent that the server
forwards (`server.protocol.vllm_fields.FORWARDED`) as they came.

Nothing here does I/O: `backends.vllm_session` sends the bodies, and `backends.vllm_responses`
reads the answers.
"""

from __future__ import annotations

from typing import Any

from backends.prompts import ChatPrompt, Prompt, SamplingParams, TextPrompt, TokenPrompt, Tools
from backends.vllm_client import JSON

__all__ = [
    "echo_body",
    "generation_request",
    "messages",
    "prompt_logprobs_body",
    "template_fields",
    "tokenize_body",
]

# Sampling fields vLLM takes as they are, with the value that leaves sampling unchanged.
_SAMPLING_EXTRAS: dict[str, float] = {
    "top_k": 0,
    "min_p": 0.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "repetition_penalty": 1.0,
}


# Forwarded fields that only vLLM's chat endpoint takes.
_CHAT_ONLY = ("reasoning_effort", "chat_template", "documents")


def generation_request(
    prompt: Prompt, params: SamplingParams, model: str, stream: bool = False
) -> tuple[str, JSON]:
    """The path and body of a call sampling `params.n` completions of `prompt`."""
    body = _sampling_body(params, model, params.max_tokens)
    if isinstance(prompt, ChatPrompt):
        path = "/v1/chat/completions"
        body["messages"] = messages(prompt)
        if prompt.tools is not None:
            # vLLM renders them with the model's template and parses the calls back out
            # (--enable-auto-tool-choice --tool-call-parser); a forced choice it enforces.
            body |= _tools_fields(prompt.tools)
        if prompt.continue_final_message:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if prompt.template_kwargs:
            body["chat_template_kwargs"] = dict(prompt.template_kwargs)
        if params.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = params.logprobs
    else:
        path = "/v1/completions"
        for name in _CHAT_ONLY:
            # Forwarded from a chat request whose calls continue as raw text: vLLM's
            # completions take none of these.
            body.pop(name, None)
        body["prompt"] = prompt.text
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return path, body


def prompt_logprobs_body(prompt: Prompt, text: str, model: str) -> JSON:
    """A `/v1/completions` body echoing `text` (a rendered prompt and its continuation) with
    the log-probability of each of its tokens."""
    return {
        "model": model,
        "prompt": text,
        "max_tokens": 1,
        "temperature": 0,
        "echo": True,
        "logprobs": 0,
        # A rendered chat template already holds its special tokens.
        "add_special_tokens": isinstance(prompt, TextPrompt),
    }


def echo_body(prompt: TextPrompt | TokenPrompt, params: SamplingParams, model: str) -> JSON:
    """A `/v1/completions` body scoring the prompt's tokens and sampling after it.

    vLLM echoes the prompt's tokens with their log-probabilities ahead of what it generates. It
    generates at least one token; for max_tokens 0 `read_echo` drops that one.
    """
    body = _sampling_body(params, model, max(1, params.max_tokens))
    body["prompt"] = prompt.text if isinstance(prompt, TextPrompt) else list(prompt.ids)
    body |= {"echo": True, "logprobs": params.logprobs or 0}
    return body


def template_fields(prompt: ChatPrompt) -> JSON:
    """The fields with which `/tokenize` applies the model's chat template to `prompt`."""
    fields: JSON = {
        "messages": messages(prompt),
        "add_generation_prompt": not prompt.continue_final_message,
        "continue_final_message": prompt.continue_final_message,
    }
    if prompt.tools is not None:
        fields["tools"] = _tools_fields(prompt.tools)["tools"]
    if prompt.template_kwargs:
        fields["chat_template_kwargs"] = dict(prompt.template_kwargs)
    return fields


def tokenize_body(
    prompt: TextPrompt | ChatPrompt, model: str, add_special_tokens: bool, with_strings: bool
) -> JSON:
    """A `/tokenize` body for a raw prompt, or a chat prompt rendered with its template."""
    body: JSON = {"model": model, "return_token_strs": with_strings}
    if isinstance(prompt, TextPrompt):
        body["prompt"] = prompt.text
    else:
        body |= template_fields(prompt)
    body["add_special_tokens"] = add_special_tokens
    return body


def messages(prompt: ChatPrompt) -> list[JSON]:
    """The conversation as vLLM's `messages` field."""
    return [m.as_dict() for m in prompt.messages]


def _sampling_body(params: SamplingParams, model: str, max_tokens: int) -> JSON:
    """The fields of a generation call that say what to sample; the client's forwarded fields
    first, so that none can override what the call itself sets."""
    body: JSON = dict(params.forwarded)
    body |= {
        "model": model,
        "n": params.n,
        "max_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "return_token_ids": True,
    }
    if params.stop:
        body["stop"] = list(params.stop)
        body["include_stop_str_in_output"] = params.include_stop
    if params.seed is not None:
        body["seed"] = params.seed
    if params.structured is not None:
        # vLLM's own field, taken alike by both endpoints (its `response_format` becomes it).
        schema = params.structured.json_schema
        body["structured_outputs"] = {"json_object": True} if schema is None else {"json": schema}
    # Neutral values stay off the wire, so a request that sets none reads as it always did.
    for name, neutral in _SAMPLING_EXTRAS.items():
        value = getattr(params, name)
        if value != neutral:
            body[name] = value
    if params.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
    if params.stop_token_ids:
        body["stop_token_ids"] = list(params.stop_token_ids)
    return body


def _tools_fields(tools: Tools) -> JSON:
    """`tools`, `tool_choice` and `parallel_tool_calls` as OpenAI's (and vLLM's) API takes them."""
    functions = []
    for tool in tools.functions:
        function: JSON = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        if tool.strict is not None:
            function["strict"] = tool.strict
        functions.append({"type": "function", "function": function})
    choice: Any = tools.choice
    if not isinstance(choice, str):
        choice = {"type": "function", "function": {"name": choice.name}}
    return {"tools": functions, "tool_choice": choice, "parallel_tool_calls": tools.parallel}
