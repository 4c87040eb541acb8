"""Run settings as one frozen object: the argument, what a result records, and what a key hashes.

``AttributionConfig`` and ``AdaptConfig`` are ``Settings``: frozen dataclasses whose fields
carry their help text (and, where they have them, their choices) in ``metadata``, so the CLI
builds its flags from them and nothing lists the settings a second time.

>>> config = attprune.AttributionConfig(method="ig", steps=8)
>>> config.replace(steps=16).to_dict()["steps"]
16
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from .errors import InputError

_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float64, torch.float32, torch.bfloat16, torch.float16)}


def option(default: Any, help: str, choices: tuple | Callable[[], tuple] | None = None, *, cli: bool = True,
           flag: str | None = None, parse: Callable[[str], Any] | None = None,
           cli_choices: tuple | None = None) -> Any:
    """A settings field: its default, help text and allowed values (a tuple, or a function that
    returns the current ones, e.g. a registry's names).

    For the CLI: ``cli=False`` keeps the field out of it; ``flag`` names it (default
    ``--field-name``); ``parse`` turns the flag's text into a value (default: the type of the
    default); ``cli_choices`` restricts the flag further than the Python API (e.g. no callables).
    """
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "cli": cli, "flag": flag,
                                                         "parse": parse, "cli_choices": cli_choices})


def check_int(name: str, value, minimum: int = 1) -> None:
    """``value`` must be an int (not a bool) >= ``minimum``; else ``InputError`` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def choices_of(field: dataclasses.Field) -> tuple | None:
    choices = field.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


DTYPE_NAMES = tuple(_DTYPES)


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def parse_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.float16`` or ``"float16"`` (None stays None)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise InputError(f"unknown dtype {value!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[value]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of the settings objects: checked on creation, JSON-able, replaceable."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            allowed = choices_of(field)
            value = getattr(self, field.name)
            if value is None and field.default is None:  # unset: a default chosen later (e.g. by a recipe)
                continue
            if allowed is not None and value not in allowed:
                raise InputError(f"unknown {field.name} {value!r}; choose one of {', '.join(map(str, allowed))}")
        self.check()

    def check(self) -> None:
        """Checks that involve more than one field's allowed values (subclasses)."""

    def replace(self, **changes) -> "Settings":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able values: dtypes by name, tuples as lists, a callable by its name."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        """The settings recorded by ``to_dict`` (other keys, such as run statistics, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _restored(v) for k, v in data.items() if k in names})

    @classmethod
    def build(cls, settings: "Settings | None", overrides: dict) -> "Settings":
        """``settings`` (or the defaults) with keyword ``overrides``; unknown names are a TypeError,
        as for any Python function."""
        base = settings if settings is not None else cls()
        if not isinstance(base, cls):
            raise InputError(f"expected a {cls.__name__}, got {type(base).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; {cls.__name__} has "
                            f"{', '.join(sorted(names))}")
        return base.replace(**overrides) if overrides else base


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, tuple):
        return list(value)
    if callable(value):  # recorded by name; a callable cannot be rebuilt from a file
        return getattr(value, "__name__", type(value).__name__)
    return value


def _restored(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
