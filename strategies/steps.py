"""Step-level search mechanics: continuing a partial solution, expanding nodes, scoring them.

A solution is a path of steps through a tree; a step ends at a separator (`\\n\\n` by default),
which stays in its text. Expanding nodes asks the backend to continue each distinct path with
one request carrying all of its children (`n`), and scoring sends every new path of a step to
the verifier in one call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Sequence

from backends.base import Completion, Prompt, SamplingParams
from strategies.base import InvalidParamsError, StrategyRequest, estimated_tokens
from strategies.context import StrategyContext
from strategies.prefixes import continuation
from strategies.sampling import question_of
from strategies.search import Node, SearchParams
from strategies.thinking import tags_for
from strategies.thinking_params import ThinkingTags
from verifiers.base import Candidate

__all__ = ["evaluate", "expand", "look_ahead"]


async def expand(
    ctx: StrategyContext,
    prompt: Prompt,
    nodes: Sequence[Node],
    widths: Sequence[int],
    sampling: SamplingParams,
    params: SearchParams,
) -> list[list[Node]]:
    """`widths[i]` new children for each node: one request per distinct prefix, with `n` for
    all its children, every request in flight at once. Each child's step is capped to its share
    of the tokens the budget has left, so a step never overshoots it by more than a token each."""
    # Each child's path is read again, with the question, when it is scored.
    question = estimated_tokens(len(question_of(prompt)))
    read = sum(w * (question + node.path_tokens) for node, w in zip(nodes, widths, strict=True))
    share = _share(ctx, sum(widths), read)
    by_path: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        by_path.setdefault(node.path, []).append(i)
    async with asyncio.TaskGroup() as group:
        requests = {
            path: group.create_task(
                ctx.generate(
                    continuation(prompt, path),
                    dataclasses.replace(
                        sampling,
                        n=sum(widths[i] for i in members),
                        stop=(params.step_separator,),
                        include_stop=True,
                        max_tokens=min(
                            share, _step_tokens(nodes[members[0]].path_tokens, sampling, params)
                        ),
                    ),
                )
            )
            for path, members in by_path.items()
        }
    children: list[list[Node]] = [[] for _ in nodes]
    for path, members in by_path.items():
        if not path:
            _refuse_thinking(
                requests[path].result().completions, tags_for(prompt, ctx.thinking_tags)
            )
        completions = iter(requests[path].result().completions)
        for i in members:
            node = nodes[i]
            for completion in (next(completions) for _ in range(widths[i])):
                ended = completion.finish_reason == "stop" and not completion.text.endswith(
                    params.step_separator
                )
                child = Node(step=completion.text, tokens=completion.tokens, parent=node)
                if completion.logprobs:
                    lps = [t.logprob for t in completion.logprobs]
                    child.mean_logprob = sum(lps) / len(lps)
                # The solution is over at the end of sequence, or when no token is left for it.
                child.cut = not ended and child.path_tokens >= sampling.max_tokens
                child.is_final = ended or child.cut
                node.children.append(child)
                children[i].append(child)
    return children


def _refuse_thinking(first_steps: Sequence[Completion], tags: ThinkingTags) -> None:
    """A 400 when the model thinks before it answers: a search steps through the answer text,
    and would otherwise score and extend the thinking as if it were steps of the solution."""
    # A block the template (or a raw prompt) opened has no opening tag in the output.
    opened = tags.opened_by_template
    if opened or any(c.reasoning or c.text.lstrip().startswith(tags.open) for c in first_steps):
        raise InvalidParamsError(
            "the model thinks before it answers (its output opened a thinking block), and a "
            "search steps through the answer text, not the thinking; turn thinking off "
            '(chat_template_kwargs {"enable_thinking": false}, or reasoning_effort "none") '
            "or use a strategy that controls thinking (none, majority_vote, weighted_vote, "
            "best_of_n)",
            param="reasoning_strategy",
        )


def _share(ctx: StrategyContext, children: int, read: int = 0) -> int:
    """Tokens each of `children` new steps may take of what the budget has left. Where the
    budget bounds what verifiers read too, the children's reading is left room for: `read` of
    their paths so far, and each new step once more."""
    left = ctx.budget.tokens_left()
    if left is None:
        return sys.maxsize
    if read and ctx.budget.reading_left() is not None:
        return max(1, (left - read) // max(1, 2 * children))
    return max(1, left // max(1, children))


def _step_tokens(used: int, sampling: SamplingParams, params: SearchParams) -> int:
    """Tokens the next step may take: a step's worth, within what the solution has left."""
    return max(1, min(params.max_step_tokens, sampling.max_tokens - used))


async def look_ahead(
    ctx: StrategyContext,
    prompt: Prompt,
    nodes: Sequence[Node],
    steps: int,
    sampling: SamplingParams,
    params: SearchParams,
) -> list[str]:
    """Each node's path extended greedily by up to `steps` more steps (the texts to score);
    the tree keeps only the nodes themselves, and their lookahead tokens are counted on them."""

    async def extend(node: Node) -> str:
        text, tokens = node.path, node.path_tokens
        greedy = dataclasses.replace(sampling, n=1, temperature=0.0)
        for _ in range(steps):
            if node.is_final or tokens >= sampling.max_tokens:
                break
            generation = await ctx.generate(
                continuation(prompt, text),
                dataclasses.replace(
                    greedy,
                    stop=(params.step_separator,),
                    include_stop=True,
                    max_tokens=min(_share(ctx, len(nodes)), _step_tokens(tokens, sampling, params)),
                ),
            )
            completion = generation.completions[0]
            text += completion.text
            tokens += completion.tokens
            node.lookahead_tokens += completion.tokens
            if not completion.text.endswith(params.step_separator):
                break
        return text

    if steps == 0:
        return [node.path for node in nodes]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(extend(node)) for node in nodes]
    return [task.result() for task in tasks]


async def evaluate(
    ctx: StrategyContext,
    request: StrategyRequest,
    nodes: Sequence[Node],
    params: SearchParams,
    texts: Sequence[str] | None = None,
) -> None:
    """Set every node's reward: the verifier's score of its path (or of the given text for
    it), all in one call."""
    if not nodes:
        return
    if texts is None:
        candidates = [Candidate(node.path, tokens=node.path_tokens) for node in nodes]
    else:
        candidates = [Candidate(text) for text in texts]
    scores = await ctx.verify(params.verifier, question_of(request.prompt), candidates)
    for node, scored in zip(nodes, scores, strict=True):
        node.reward = scored.aggregated(params.aggregation)
        node.step_rewards = scored.steps
