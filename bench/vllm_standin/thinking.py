"""The stand-in as a reasoning model: a model text that opens with a `<think>` block thinks
first, and the gateway's thinking controls find what a real one would give them.

- continuing a prefix of its own text, it goes on as it began (the usual stand-in rule);
- asked for the answer in the middle of its thinking (a probe: the prefix ends in `\\boxed{`),
  it gives the last number it has thought of, so that probes agree once the thinking has
  settled on its answer;
- made to end its thinking early (a closing tag the server wrote), it answers as it would have;
  a scripted model (`Options.script`, below) answers with the last number it had thought of
  instead, as a model cut off before it settled would;
- with `chat_template_kwargs.enable_thinking` false, it answers without thinking, as Qwen3's
  template asks.

A script (`python -m bench.vllm_standin --frontend checking --script FILE`, FILE a JSON object
of question to model text) gives each question its own thought: a prompt that contains a
question of the script is answered with that question's text (the longest question found).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CLOSE", "OPEN", "scripted_text", "thinking_text"]

OPEN, CLOSE = "<think>", "</think>"
_NUMBER = re.compile(r"-?\d+")


def scripted_text(script: Sequence[tuple[str, str]], prompt: str) -> str | None:
    """The model text a script gives `prompt`: the one of the longest question it contains."""
    found = [(len(question), text) for question, text in script if question in prompt]
    return max(found)[1] if found else None


def thinking_text(
    body: Mapping[str, Any], model_text: str, prefix: str, settles: bool = False
) -> str | None:
    """What a thinking `model_text` writes after `prefix` where it differs from going on as it
    began; None where it does not (or the text does not think). With `settles`, an answer
    forced before the thinking ended is the last number thought of."""
    if not model_text.lstrip().startswith(OPEN):
        return None
    answer = model_text.split(CLOSE, 1)[1].lstrip() if CLOSE in model_text else ""
    kwargs = body.get("chat_template_kwargs") or {}
    if kwargs.get("enable_thinking") is False and not prefix:
        return answer
    thought = prefix[: prefix.rfind(CLOSE)] if CLOSE in prefix else prefix
    numbers = _NUMBER.findall(thought)
    if prefix.endswith("\\boxed{"):
        return (numbers[-1] if numbers else "unsure") + "}"
    if CLOSE in prefix and not model_text.startswith(prefix):
        return _with_last_number(answer, numbers[-1]) if settles and numbers else answer
    return None


def _with_last_number(answer: str, number: str) -> str:
    """`answer` with its last number replaced by `number` (or `number` alone if it has none)."""
    found = list(_NUMBER.finditer(answer))
    if not found:
        return number
    last = found[-1]
    return answer[: last.start()] + number + answer[last.end() :]
