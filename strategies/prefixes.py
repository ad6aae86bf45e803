"""Continuing a partial answer: the prompt that makes the model go on from a prefix of its own.

Searches continue partial solutions step by step, and thinking controls continue a candidate's
thinking (`strategies.thinking`). A chat prompt gets the prefix as a last assistant turn, which
the backend continues (vLLM's `continue_final_message`); a raw prompt gets it appended.
"""

from __future__ import annotations

import dataclasses

from backends.base import ChatMessage, Prompt, TextPrompt

__all__ = ["continuation"]


def continuation(prompt: Prompt, prefix: str) -> Prompt:
    """The prompt that makes the model continue `prefix` as its own answer; the chat template
    is rendered with the same arguments as the prompt's."""
    if not prefix:
        return prompt
    if isinstance(prompt, TextPrompt):
        return TextPrompt(prompt.text + prefix)
    messages = prompt.messages
    if prompt.continue_final_message:
        # The client already began the answer: the continuation goes on after it.
        last = messages[-1]
        messages = (*messages[:-1], ChatMessage(last.role, last.content + prefix))
    else:
        messages = (*messages, ChatMessage("assistant", prefix))
    return dataclasses.replace(prompt, messages=messages, continue_final_message=True, tools=None)
