"""API keys: the key file, what each key may spend, and the one lookup a request costs.

`--api-keys` (`TTC_API_KEYS`) is either a key file or a comma-separated list of keys. A value
naming a file (a path without a comma: absolute, relative from `./`, an existing file, or ending
in `.json`, `.yaml` or `.yml`) is read as a YAML or JSON
list of keys, each with an `alias` and optional `limits`::

    - alias: team-a
      key: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      limits: {rpm: 60, tpm: 100000, max_in_flight: 4, usd_per_day: 5}
    - alias: ci
      key: sk-ci-not-a-secret

Anything else is a list of keys without limits, aliased `key-1`, `key-2`... by position. A key
is stored as its SHA-256 digest only (given as `sha256:<hex>`, or hashed when the file is read),
and a presented key is hashed and looked up in a dict: the comparison takes the same time
whatever the key, and no key is ever kept, logged or used as a label.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

__all__ = ["ApiKey", "KeyLimits", "KeyRing", "KeySpec", "digest"]

_HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
_ALIAS = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A label value and a Redis key part: bounded and plain.
_FILE_SUFFIXES = (".json", ".yaml", ".yml")

# The keys of deploy/api-keys.example.yaml, published with the code: a server holding one is a
# demo at best (tests/unit/test_deploy.py checks that this list matches the file).
PUBLISHED_EXAMPLE_KEYS = ("sk-ttc-example-team-a", "sk-ttc-example-ci")


class KeyLimits(BaseModel):
    """What one key may spend; every limit is optional (absent: only the server's limits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(
        default=None, ge=1, description="Generated plus verifier tokens per minute."
    )
    max_in_flight: int | None = Field(default=None, ge=1, description="Requests at once.")
    max_n: int | None = Field(default=None, ge=1, description="Largest `n` of a request.")
    max_search_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Largest token budget of a request (`budget.tokens`, `max_search_tokens`, or, when "
            "it names none, the most its strategy may spend)."
        ),
    )
    strategies: frozenset[str] | None = Field(
        default=None, description="The reasoning strategies the key may use (absent: all)."
    )
    usd_per_day: float | None = Field(
        default=None, gt=0, description="Dollars per UTC day, at the server's --prices."
    )
    usd_per_month: float | None = Field(
        default=None, gt=0, description="Dollars per UTC calendar month, at --prices."
    )

    @property
    def has_budget(self) -> bool:
        """Whether the key has a dollar budget."""
        return self.usd_per_day is not None or self.usd_per_month is not None

    @property
    def is_metered(self) -> bool:
        """Whether admitting a request of this key needs the shared store."""
        return self.has_budget or any(
            v is not None for v in (self.rpm, self.tpm, self.max_in_flight)
        )


class KeySpec(BaseModel):
    """One entry of the key file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(description="The key's name in metrics and logs; never the key itself.")
    key: str = Field(min_length=1, description="The key, or `sha256:<hex>` of it.")
    limits: KeyLimits = Field(default_factory=KeyLimits)

    @field_validator("alias")
    @classmethod
    def _plain_alias(cls, alias: str) -> str:
        if not _ALIAS.fullmatch(alias):
            raise ValueError("an alias is 1 to 64 letters, digits or . _ : -")
        return alias


_KEY_FILE = TypeAdapter(list[KeySpec])


@dataclass(frozen=True)
class ApiKey:
    """A known key, as requests carry it through the server: its alias and limits."""

    alias: str
    limits: KeyLimits


def digest(key: str) -> bytes:
    """The SHA-256 digest a key is stored and looked up as."""
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Every accepted key, by digest."""

    def __init__(self, specs: Iterable[KeySpec]) -> None:
        self._by_digest: dict[bytes, ApiKey] = {}
        aliases: set[str] = set()
        for spec in specs:
            if spec.alias in aliases:
                raise ValueError(f"alias {spec.alias!r} is given twice")
            aliases.add(spec.alias)
            hashed = _HASHED.fullmatch(spec.key)
            key_digest = bytes.fromhex(hashed.group(1)) if hashed else digest(spec.key)
            if key_digest in self._by_digest:
                raise ValueError(f"the key of {spec.alias!r} is given twice")
            self._by_digest[key_digest] = ApiKey(spec.alias, spec.limits)
        if not self._by_digest:
            raise ValueError("no keys given")

    @classmethod
    def load(cls, value: str) -> KeyRing:
        """The keys of `--api-keys`: a key file, or comma-separated keys (see the module)."""
        if _names_a_file(value):
            return cls(_read_key_file(Path(value)))
        keys = [key.strip() for key in value.split(",") if key.strip()]
        return cls(KeySpec(alias=f"key-{i}", key=key) for i, key in enumerate(keys, 1))

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every key's alias: the bounded values of the `key` metric label."""
        return tuple(key.alias for key in self._by_digest.values())

    @property
    def keys(self) -> Mapping[bytes, ApiKey]:
        """Every key by digest."""
        return self._by_digest

    def find(self, key: str) -> ApiKey | None:
        """The key presented as `key`, or None when it is not one of ours."""
        return self._by_digest.get(digest(key))

    def published_examples(self) -> list[str]:
        """The aliases of keys anyone can read in the repository (the example key file's)."""
        return [key.alias for k in PUBLISHED_EXAMPLE_KEYS if (key := self.find(k)) is not None]


def _names_a_file(value: str) -> bool:
    """Whether `--api-keys` names a key file rather than listing keys. Keys may hold a `/`
    (base64 does), and an error about a file echoes its name: so a value with a comma is always
    keys, and one is a file only where it reads as a path (absolute, `./`, `~`, or a key file's
    suffix) or is one that exists."""
    if "," in value:
        return False
    if value.startswith(("/", "./", "../", "~")) or value.endswith(_FILE_SUFFIXES):
        return True
    return "/" in value and Path(value).is_file()


def _read_key_file(path: Path) -> list[KeySpec]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the key file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"the key file {path} is not valid JSON or YAML") from exc
    try:
        return _KEY_FILE.validate_python(data)
    except ValidationError as exc:
        # The message names fields, never the values given (they may be keys).
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"the key file {path} is invalid: {problems}") from None
