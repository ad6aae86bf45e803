"""Compiled grammars: a missing engine is a clear error, and no failure outlives its cause."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from backends.base import StructuredOutput
from backends.embedded_grammar import ENGINE_MISSING, Grammars
from backends.errors import FeatureUnavailable

SCHEMA = StructuredOutput(json_schema={"type": "object"})


class FakeCompiler:
    def compile_json_schema(self, schema: str, any_whitespace: bool) -> Any:
        return ("grammar", schema)


async def test_without_xgrammar_a_structured_request_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grammars = Grammars(tokenizer=None, vocab_size=8, eos_ids=[0])
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "xgrammar", None)  # `import xgrammar` raises ImportError
        with pytest.raises(FeatureUnavailable, match="xgrammar") as raised:
            await grammars.compiled(SCHEMA)
        assert str(raised.value) == ENGINE_MISSING
        # The same schema again: the failure was not kept, the import is tried again.
        with pytest.raises(FeatureUnavailable):
            await grammars.compiled(SCHEMA)
    # Once the engine is there, the schema seen before compiles (a kept failure would 500
    # every request with it until a restart).
    monkeypatch.setattr(grammars, "_compiler", FakeCompiler())
    assert await grammars.compiled(SCHEMA) == ("grammar", '{"type": "object"}')
    assert await grammars.compiled(StructuredOutput()) == (
        "grammar",
        '{"additionalProperties": true, "type": "object"}',
    )
