"""The embedded model's precision choice and settings, without loading weights."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backends.embedded_model import choose_dtype
from backends.embedded_settings import EmbeddedSettings

AVX2 = frozenset({"fma", "avx", "avx2"})


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (AVX2, "float32"),
        (AVX2 | {"avx512f", "avx512bw"}, "float32"),
        (AVX2 | {"avx512f", "avx512_bf16"}, "bfloat16"),
        (AVX2 | {"amx_bf16", "amx_tile"}, "bfloat16"),
        (frozenset(), "float32"),
    ],
)
def test_auto_takes_bf16_only_where_the_cpu_computes_it(
    flags: frozenset[str], expected: str
) -> None:
    dtype, reason = choose_dtype("auto", flags)
    assert dtype == expected
    assert ("natively" in reason) == (expected == "bfloat16")


@pytest.mark.parametrize("setting", ["float32", "bfloat16"])
def test_an_explicit_dtype_wins_over_the_cpu(setting: str) -> None:
    for flags in (AVX2, AVX2 | {"avx512_bf16"}):
        assert choose_dtype(setting, flags) == (setting, "set by --embedded.dtype")


def test_dtype_setting_defaults_to_auto_and_rejects_others() -> None:
    assert EmbeddedSettings().dtype == "auto"
    assert EmbeddedSettings(dtype="float32").dtype == "float32"
    with pytest.raises(ValidationError):
        EmbeddedSettings(dtype="float16")  # type: ignore[arg-type]
