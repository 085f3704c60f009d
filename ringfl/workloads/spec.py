"""Reading task files (queries, training tasks) in TOML or JSON, with field checks.

Both formats give the same nested mapping; `.json` files are JSON, anything else is TOML.
Errors are `ConfigError`s naming the file and the field, as in `ringfl.config`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def parse_text(text: str, source: str, *, json_format: bool) -> dict[str, Any]:
    """Parse TOML or JSON text into a mapping (errors name `source`)."""
    try:
        raw = json.loads(text) if json_format else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a table/object")
    return raw


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML or JSON file (by suffix: `.json` is JSON) into a mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_text(text, str(path), json_format=path.suffix.lower() == ".json")


def check_keys(
    values: Mapping[str, Any], known: set[str] | frozenset[str], where: str, source: str
) -> None:
    """Refuse unknown keys, naming the first one and listing the known ones."""
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{source}: {where}{key}: unknown key (known: {', '.join(sorted(known))})"
            )


def number(v: Any, name: str, source: str, *, lo: float | None = None, integer: bool = False):
    """A number (int when `integer`) at least `lo`, else a `ConfigError` naming the field."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if integer:
        ok = ok and isinstance(v, int)
    if not ok or (lo is not None and v < lo):
        kind = "an integer" if integer else "a number"
        bound = f" >= {lo}" if lo is not None else ""
        raise ConfigError(f"{source}: {name}: must be {kind}{bound}, got {v!r}")
    return v


__all__ = ["check_keys", "load_spec", "number", "parse_text"]
