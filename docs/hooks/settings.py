"""MkDocs hook: the configuration page's settings tables, rendered from `server.settings.Settings`.

The page holds a marker, `<!-- settings-table -->`; at build time it becomes one table of the
top-level settings and one per nested group (`--limits.*`, `--vllm.*`, `--embedded.*`), each row
read from the pydantic field: its flag, its environment variable, its type, its default and its
description. The names follow what `ttc-server` (pydantic-settings' `CliApp`, with kebab-case
flags, `env_prefix="TTC_"` and `env_nested_delimiter="__"`) accepts, so the page cannot drift
from the code: a setting added, renamed or re-described there changes the page on the next build.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = "<!-- settings-table -->"
ENV_PREFIX = "TTC_"
ENV_DELIMITER = "__"

Row = tuple[str, str, str, str, str]


def on_config(config: Any) -> Any:
    """Make the repository importable, so the hook reads the settings of this checkout."""
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the settings tables."""
    if MARKER not in markdown:
        return markdown
    try:
        from server.settings import Settings
    except Exception as exc:  # the page would be wrong without it: fail the build
        raise PluginError(f"settings hook: cannot import server.settings: {exc!r}") from exc
    return markdown.replace(MARKER, render_settings(Settings))


def render_settings(settings: type[BaseModel]) -> str:
    """The top-level fields as one table, then each nested group under its own heading."""
    top: list[Row] = []
    groups: list[str] = []
    for name, field in settings.model_fields.items():
        if _is_group(field.annotation):
            groups.append(_render_group(name, field))
        else:
            top.append(_row((name,), field))
    return "\n\n".join([_table(top), *groups]) + "\n"


def _render_group(name: str, field: FieldInfo) -> str:
    model = typing.cast(type[BaseModel], field.annotation)
    flag, env = _flag((name,)), _env((name,))
    lead = field.description or (model.__doc__ or "").strip().splitlines()[0]
    rows = [_row((name, sub), sub_field) for sub, sub_field in model.model_fields.items()]
    return "\n\n".join(
        [
            f"### `{flag}.*`",
            f"{lead} The whole group can also be given as one JSON object, "
            f"`{flag} '{{...}}'` or `{env}='{{...}}'`.",
            _table(rows),
        ]
    )


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _row(path: tuple[str, ...], field: FieldInfo) -> Row:
    flag = _flag(path)
    if field.annotation is bool and any("ImplicitFlag" in str(m) for m in field.metadata):
        flag = f"{flag}` / `--no-{flag[2:]}"
    return (
        f"`{flag}`",
        f"`{_env(path)}`",
        _type(field.annotation),
        _default(field),
        _cell(field.description or ""),
    )


def _flag(path: tuple[str, ...]) -> str:
    return "--" + ".".join(part.replace("_", "-") for part in path)


def _env(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(part.upper() for part in path)


def _type(annotation: Any) -> str:
    """A reader's name for a field's type: `int`, one of `a`, `b`, a JSON object..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        named = " or ".join(_type(a) for a in kept)
        return named if len(kept) == len(args) else f"{named}, optional"
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is dict:
        return "JSON object"
    if origin is list:
        return f"list of {_type(args[0])}s" if args else "list"
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "flag"}.get(
            annotation.__name__, annotation.__name__
        )
    return _cell(str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "none" if value in ({}, []) else _cell(f"`{value!r}`")
    if field.default is PydanticUndefined:
        return ""
    if field.default is None:
        return "unset"
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    return f"`{field.default}`"


def _cell(text: str) -> str:
    """Table-safe text: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(rows: list[Row]) -> str:
    head = "| flag | environment | type | default | |\n|---|---|---|---|---|"
    return "\n".join([head, *("| " + " | ".join(row) + " |" for row in rows)])
