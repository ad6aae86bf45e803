"""The tokenizer routes as vLLM serves them: `POST /tokenize`, `POST /detokenize`,
`GET /tokenizer_info` (vllm/entrypoints/serve/tokenize/protocol.py), so that a client such as
lm-eval can tokenize through the server instead of loading tokenizer files."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backends.base import ChatPrompt, TextPrompt
from server.protocol.chat import ChatCompletionMessageParam
from server.protocol.common import OpenAIBaseModel
from server.protocol.errors import InvalidRequest

__all__ = [
    "DetokenizeRequest",
    "DetokenizeResponse",
    "TokenizeRequest",
    "TokenizeResponse",
    "TokenizerInfoResponse",
]


class TokenizeRequest(OpenAIBaseModel):
    """Text (`prompt`) or a conversation (`messages`, rendered with the chat template)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatCompletionMessageParam] | None = None
    add_special_tokens: bool | None = Field(
        default=None, description="Default: true for a prompt, false for messages (as vLLM's)."
    )
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("give either prompt or messages", "prompt")
        if self.continue_final_message and self.add_generation_prompt and self.messages:
            if "add_generation_prompt" in self.model_fields_set:
                raise InvalidRequest(
                    "continue_final_message and add_generation_prompt exclude each other",
                    "continue_final_message",
                )
        return self

    def to_prompt(self) -> TextPrompt | ChatPrompt:
        """The prompt as the backend tokenizes it."""
        if self.messages is None:
            assert self.prompt is not None
            return TextPrompt(self.prompt)
        messages = tuple(m.to_message(f"messages.{i}") for i, m in enumerate(self.messages))
        return ChatPrompt(messages, continue_final_message=self.continue_final_message)

    def special_tokens(self) -> bool:
        """Whether the tokenizer adds its special tokens (a chat template has its own)."""
        if self.add_special_tokens is not None:
            return self.add_special_tokens
        return self.messages is None


class TokenizeResponse(BaseModel):
    """The token ids, their count and the model's context length."""

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIBaseModel):
    """Token ids to turn back into text."""

    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    """The text of the token ids."""

    prompt: str


class TokenizerInfoResponse(BaseModel):
    """The tokenizer's configuration (its tokenizer_config.json, special tokens as text)."""

    model_config = ConfigDict(extra="allow")

    tokenizer_class: str
