"""The embedded sampler's logits transforms, each on a tiny vocabulary with exact outcomes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from backends.base import SamplingParams
from backends.embedded_sampling import LogitsTransforms, pick

VOCAB = 6


def params(**fields: Any) -> SamplingParams:
    return SamplingParams(max_tokens=8, **fields)


def transformed(
    logits: list[float], fields: dict[str, Any], prompt: tuple[int, ...] = ()
) -> list[float]:
    transforms = LogitsTransforms.of(params(**fields), prompt, VOCAB, None)
    assert transforms is not None
    out: list[float] = transforms.apply(torch.tensor([logits]), [0])[0].tolist()
    return out


def draws(logits: list[float], fields: dict[str, Any], count: int = 400) -> set[int]:
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([logits] * count)
    tokens, _ = pick(rows, params(**fields), 1.0, False, generator)
    return set(tokens.tolist())


def test_a_request_without_transforms_gets_none() -> None:
    assert LogitsTransforms.of(params(top_k=3, min_p=0.1), [1, 2], VOCAB, None) is None


def test_logit_bias_adds_to_the_named_tokens() -> None:
    assert transformed([0.0] * VOCAB, {"logit_bias": ((1, 5.0), (4, -100.0))}) == [
        0.0,
        5.0,
        0.0,
        0.0,
        -100.0,
        0.0,
    ]


def test_logit_bias_can_force_a_token_greedily() -> None:
    transforms = LogitsTransforms.of(params(logit_bias=((3, 100.0),)), [], VOCAB, None)
    assert transforms is not None
    scores = transforms.apply(torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]]), [0])
    tokens, _ = pick(scores, params(), 0.0, False, None)
    assert tokens.tolist() == [3]


def test_frequency_and_presence_penalties_count_the_output_per_row() -> None:
    transforms = LogitsTransforms.of(
        params(n=2, frequency_penalty=0.5, presence_penalty=1.0), [0], VOCAB, None
    )
    assert transforms is not None
    transforms.advance([0, 1], [2, 3])
    transforms.advance([0], [2])
    scores = transforms.apply(torch.zeros(2, VOCAB), [0, 1]).tolist()
    # Row 0 wrote token 2 twice: 2 x 0.5 + 1.0; row 1 wrote token 3 once: 0.5 + 1.0.
    assert scores[0] == [0.0, 0.0, -2.0, 0.0, 0.0, 0.0]
    assert scores[1] == [0.0, 0.0, 0.0, -1.5, 0.0, 0.0]
    # Only the rows still live are given: row 1 alone.
    assert transforms.apply(torch.zeros(1, VOCAB), [1]).tolist() == [scores[1]]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = [2.0, -2.0, 2.0, -2.0, 2.0, 2.0]
    # Tokens 0 and 1 are in the prompt; nothing generated yet.
    assert transformed(logits, {"repetition_penalty": 2.0}, (0, 1)) == [
        1.0,
        -4.0,
        2.0,
        -2.0,
        2.0,
        2.0,
    ]


def test_top_k_keeps_only_the_k_likeliest() -> None:
    logits = [0.0, 3.0, 1.0, 2.9, 0.5, 2.8]
    assert draws(logits, {}) == set(range(VOCAB))
    assert draws(logits, {"top_k": 2}) == {1, 3}


def test_min_p_drops_tokens_far_below_the_likeliest() -> None:
    # exp(-3) is about 0.05 of the top token's probability: below 0.1, dropped.
    logits = [0.0, 0.0, -3.0, -3.0, -0.5, -3.0]
    assert draws(logits, {"min_p": 0.1}) == {0, 1, 4}


def test_logprobs_stay_those_of_the_raw_distribution() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]])
    _, dist = pick(logits, params(top_k=1), 1.0, True, torch.Generator().manual_seed(1))
    assert torch.allclose(dist, torch.log_softmax(logits, dim=-1))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_penalties_apply_to_greedy_and_sampled_decoding(temperature: float) -> None:
    transforms = LogitsTransforms.of(params(presence_penalty=2.0), [], VOCAB, None)
    assert transforms is not None
    transforms.advance([0], [0])
    scores = transforms.apply(torch.tensor([[1.0, 0.0, -5.0, -5.0, -5.0, -5.0]]), [0])
    tokens, _ = pick(scores, params(top_k=1), temperature, False, torch.Generator())
    assert tokens.tolist() == [1]
