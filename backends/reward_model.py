"""Reward models served by vLLM with `--runner pooling`: `POST /pooling` and `POST /classify`.

Request and response shapes follow vLLM's pooling API
(https://docs.vllm.ai/en/latest/models/pooling_models/ and
`vllm/entrypoints/pooling/pooling/protocol.py`): `/pooling` takes
`{"model", "input": [text, ...], "task"}` and answers `data[i].data` as a list of vectors, one
per step tag for a STEP pooler (a process reward model) or one per token for a token
classifier; `/classify` takes the same `input` and answers `data[i].probs`. A batch of texts is
one request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backends.errors import BackendResponseError
from backends.results import RewardOutputs
from backends.vllm_client import JSON, VLLMClient

__all__ = ["VLLMRewardModel"]


class VLLMRewardModel:
    """One vLLM pooling server behind the `RewardModel` protocol."""

    def __init__(
        self, client: VLLMClient, url: str, model: str, task: str | None = "token_classify"
    ) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._model = model
        # vLLM >= 0.11 serves process reward models under the token_classify task.
        self._task = task

    async def pool(self, texts: Sequence[str]) -> RewardOutputs:
        body: JSON = {"model": self._model, "input": list(texts)}
        if self._task:
            body["task"] = self._task
        data = await self._post("/pooling", body)
        return RewardOutputs(
            tuple(_rows(item.get("data")) for item in _items(data, len(texts))),
            prompt_tokens=_prompt_tokens(data),
        )

    async def classify(self, texts: Sequence[str]) -> RewardOutputs:
        data = await self._post("/classify", {"model": self._model, "input": list(texts)})
        return RewardOutputs(
            tuple(_rows(item.get("probs")) for item in _items(data, len(texts))),
            prompt_tokens=_prompt_tokens(data),
        )

    async def _post(self, path: str, body: JSON) -> JSON:
        return await self._client.post(self._url, path, body)


def _items(data: JSON, expected: int) -> list[JSON]:
    items = sorted(data.get("data") or [], key=lambda item: item.get("index", 0))
    if len(items) != expected:
        raise BackendResponseError(
            f"reward model answered {len(items)} items for {expected} inputs"
        )
    return items


def _rows(value: Any) -> tuple[tuple[float, ...], ...]:
    """A vector or a list of vectors as rows of floats."""
    if not isinstance(value, list) or not value:
        raise BackendResponseError(f"reward model output is not a list of numbers: {value!r:.100}")
    try:
        if isinstance(value[0], list):
            return tuple(tuple(float(x) for x in row) for row in value)
        return (tuple(float(x) for x in value),)
    except (TypeError, ValueError) as exc:
        raise BackendResponseError(f"reward model output is not numeric: {exc}") from exc


def _prompt_tokens(data: JSON) -> int:
    usage = data.get("usage") or {}
    tokens = usage.get("prompt_tokens", 0)
    return tokens if isinstance(tokens, int) else 0
