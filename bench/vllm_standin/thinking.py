"""The stand-in as a reasoning model: a model text that opens with a `<think>` block thinks
first, and the gateway's thinking controls find what a real one would give them.

- continuing a prefix of its own text, it goes on as it began (the usual stand-in rule);
- asked for the answer in the middle of its thinking (a probe: the prefix ends in `\\boxed{`),
  it gives the last number it has thought of, so that probes agree once the thinking has
  settled on its answer;
- made to end its thinking early (a closing tag the server wrote), it answers as it would have;
- with `chat_template_kwargs.enable_thinking` false, it answers without thinking, as Qwen3's
  template asks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["OPEN", "CLOSE", "thinking_text"]

OPEN, CLOSE = "<think>", "</think>"
_NUMBER = re.compile(r"-?\d+")


def thinking_text(body: Mapping[str, Any], model_text: str, prefix: str) -> str | None:
    """What a thinking `model_text` writes after `prefix` where it differs from going on as it
    began; None where it does not (or the text does not think)."""
    if not model_text.lstrip().startswith(OPEN):
        return None
    answer = model_text.split(CLOSE, 1)[1].lstrip() if CLOSE in model_text else ""
    kwargs = body.get("chat_template_kwargs") or {}
    if kwargs.get("enable_thinking") is False and not prefix:
        return answer
    if prefix.endswith("\\boxed{"):
        thought = prefix[: prefix.rfind(CLOSE)] if CLOSE in prefix else prefix
        numbers = _NUMBER.findall(thought)
        return (numbers[-1] if numbers else "unsure") + "}"
    if CLOSE in prefix and not model_text.startswith(prefix):
        return answer
    return None
