"""`vllm_prm`: a process reward model served by vLLM, scoring every step of every candidate.

Each candidate is split into steps on a separator; the model's step tag goes after each step
and the PRM's pooler answers one probability vector per tag (vLLM's STEP pooler), of which
the positive class is the step's score. All candidates of a question go in one `/pooling` call.

Presets:
- `qwen2.5-math-prm` (Qwen/Qwen2.5-Math-PRM-7B): steps split on `\\n\\n`, `<extra_0>` after each
  step, inside the model's chat template; the positive probability is at index 1.
- `math-shepherd` (peiyi9979/math-shepherd-mistral-7b-prm): `ки` after each step, question and
  steps as plain text; vLLM is started with `returned_token_ids` = [`+`, `-`], so the positive
  probability is at index 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from backends.base import Backend, RewardModel
from backends.reward_model import VLLMRewardModel
from backends.vllm_client import HTTPClients
from verifiers.base import (
    Candidate,
    CandidateScore,
    Scores,
    VerifierConfig,
    VerifierError,
    split_steps,
)

__all__ = ["PRESETS", "PRMConfig", "PRMFormat", "PRMVerifier"]


@dataclass(frozen=True)
class PRMFormat:
    """How a PRM wants its input: the step tag, what surrounds it, and the prompt template."""

    step_tag: str
    positive_index: int
    template: str
    before_tag: str = ""
    after_tag: str = ""
    step_separator: str = "\n\n"

    def render(self, question: str, steps: Sequence[str]) -> str:
        """The PRM's input text for one candidate, one step tag after each step."""
        tagged = "".join(
            f"{step}{self.before_tag}{self.step_tag}{self.after_tag}" for step in steps
        )
        return self.template.format(question=question, steps=tagged.rstrip("\n"))


_QWEN_TEMPLATE = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within "
    "\\boxed{{}}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
    "<|im_start|>assistant\n{steps}<|im_end|><|endoftext|>"
)

PRESETS: dict[str, PRMFormat] = {
    "qwen2.5-math-prm": PRMFormat(step_tag="<extra_0>", positive_index=1, template=_QWEN_TEMPLATE),
    "math-shepherd": PRMFormat(
        step_tag="ки",
        positive_index=0,
        template="{question} {steps}",
        before_tag=" ",
        after_tag="\n",
        step_separator="\n",
    ),
}


class PRMConfig(VerifierConfig):
    """Settings of a `vllm_prm` verifier; the preset's fields can each be overridden."""

    kind: Literal["vllm_prm"] = "vllm_prm"
    url: str = Field(description="Base URL of the vLLM server running the PRM.")
    model: str = Field(description="The PRM's served model name.")
    preset: Literal["qwen2.5-math-prm", "math-shepherd"] = "qwen2.5-math-prm"
    step_tag: str | None = None
    positive_index: int | None = None
    template: str | None = Field(default=None, description="With {question} and {steps}.")
    step_separator: str | None = None
    task: str | None = Field(default="token_classify", description="vLLM pooling task.")

    def format(self) -> PRMFormat:
        """The preset with this config's overrides applied."""
        base = PRESETS[self.preset]
        return PRMFormat(
            step_tag=self.step_tag or base.step_tag,
            positive_index=base.positive_index
            if self.positive_index is None
            else self.positive_index,
            template=self.template or base.template,
            before_tag=base.before_tag,
            after_tag=base.after_tag,
            step_separator=self.step_separator or base.step_separator,
        )


class PRMVerifier:
    """Step scores from a vLLM-served process reward model."""

    config_model: ClassVar[type[VerifierConfig]] = PRMConfig

    def __init__(self, model: RewardModel, fmt: PRMFormat) -> None:
        self._model = model
        self._format = fmt

    @classmethod
    def create(cls, config: PRMConfig, backend: Backend, clients: HTTPClients) -> PRMVerifier:
        """The PRM at `config.url`, on a pooled client of its own."""
        model = VLLMRewardModel(clients.open(), config.url, config.model, config.task)
        return cls(model, config.format())

    @property
    def logprobs(self) -> int | None:
        return None

    async def score(self, question: str, candidates: Sequence[Candidate]) -> Scores:
        steps = [split_steps(c.text, self._format.step_separator) for c in candidates]
        texts = [self._format.render(question, s) for s in steps]
        outputs = await self._model.pool(texts)
        scored = []
        for candidate_steps, rows in zip(steps, outputs.rows, strict=True):
            if len(rows) < len(candidate_steps):
                raise VerifierError(
                    f"PRM returned {len(rows)} step scores for {len(candidate_steps)} steps; "
                    "is it served with the step tag this preset uses?"
                )
            # A question that itself contains the tag yields extra rows first; steps come last.
            rows = rows[len(rows) - len(candidate_steps) :]
            step_scores = tuple(_pick(row, self._format.positive_index) for row in rows)
            scored.append(CandidateScore(step_scores[-1], step_scores))
        return Scores(tuple(scored), tokens=outputs.prompt_tokens)


def _pick(row: Sequence[float], index: int) -> float:
    try:
        return row[index]
    except IndexError:
        raise VerifierError(f"reward row {list(row)} has no class {index}") from None
