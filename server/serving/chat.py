"""Rendering `POST /v1/chat/completions`: the `chat.completion` body and its chunks."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from backends.base import FinishReason, TokenLogprob
from server.protocol.chat import (
    ChatChoiceLogprobs,
    ChatCompletionChoice,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatLogprob,
    ChatMessageOut,
    DeltaMessage,
    TopLogprob,
)
from server.protocol.tools import DeltaToolCall, ToolCallOut
from server.serving.rendering import ChunkRendering
from strategies.base import ChoiceDelta, StrategyResult

__all__ = ["ChatRendering", "chat_logprobs"]


def chat_logprobs(logprobs: tuple[TokenLogprob, ...] | None) -> ChatChoiceLogprobs | None:
    """OpenAI's chat shape of the backend's log-probabilities, or None when none were asked for."""
    if logprobs is None:
        return None
    return ChatChoiceLogprobs(
        content=[
            ChatLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.token.encode()),
                top_logprobs=[
                    TopLogprob(token=t, logprob=v, bytes=list(t.encode())) for t, v in lp.top
                ],
            )
            for lp in logprobs
        ]
    )


class ChatRendering(ChunkRendering):
    """One chat completion, whole or as `chat.completion.chunk`s."""

    body_model: ClassVar[type[BaseModel]] = ChatCompletionResponse
    chunk_model: ClassVar[type[BaseModel]] = ChatCompletionStreamResponse

    def __init__(
        self, request_id: str, model: str, with_trace: bool, show_reasoning: bool = True
    ) -> None:
        super().__init__(request_id, model, with_trace)
        # vLLM's `include_reasoning`: false leaves the thinking out (it is still read).
        self.show_reasoning = show_reasoning

    def choices(self, result: StrategyResult) -> list[ChatCompletionChoice]:
        return [
            ChatCompletionChoice(
                index=i,
                message=ChatMessageOut(
                    # A turn that only called tools has no content, as OpenAI's.
                    content=None if c.tool_calls and not c.content else c.content,
                    reasoning=c.reasoning if self.show_reasoning else None,
                    reasoning_content=c.reasoning if self.show_reasoning else None,
                    tool_calls=[ToolCallOut.of(call) for call in c.tool_calls],
                ),
                logprobs=chat_logprobs(c.logprobs),
                finish_reason=c.finish_reason,
            )
            for i, c in enumerate(result.choices)
        ]

    def opening(self, n: int) -> list[BaseModel]:
        # The first chunk of each choice announces the assistant role, as OpenAI's do.
        announce = DeltaMessage(role="assistant", content="")
        return [self.chunk([ChatCompletionStreamChoice(index=i, delta=announce)]) for i in range(n)]

    def delta(self, delta: ChoiceDelta) -> BaseModel:
        reasoning = (delta.reasoning or None) if self.show_reasoning else None
        message = DeltaMessage(
            content=delta.content or None,
            reasoning=reasoning,
            reasoning_content=reasoning,
            tool_calls=[DeltaToolCall.of(piece) for piece in delta.tool_calls] or None,
        )
        logprobs = chat_logprobs(delta.logprobs)
        return self.chunk(
            [ChatCompletionStreamChoice(index=delta.index, delta=message, logprobs=logprobs)]
        )

    def finish(self, index: int, reason: FinishReason) -> BaseModel:
        return self.chunk(
            [ChatCompletionStreamChoice(index=index, delta=DeltaMessage(), finish_reason=reason)]
        )
