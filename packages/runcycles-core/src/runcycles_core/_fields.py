"""Typo-proof keyword settings: unknown names fail loudly, listing the valid ones."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["check_fields", "strict_fields"]

_C = TypeVar("_C", bound=type)


def check_fields(owner: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise :class:`TypeError` if ``given`` holds a name not in ``valid``.

    The message names each unknown field (with the closest valid name, if any) and lists every
    valid field, so a typo like ``retry_max_atempts=`` is fixed without reading the source.
    """
    known = sorted(set(valid))
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    noun = "field" if len(unknown) == 1 else "fields"
    raise TypeError(
        f"{owner} got unknown {noun} {', '.join(parts)}; valid fields: {', '.join(known)}"
    )


def strict_fields(cls: _C) -> _C:
    """Class decorator for a dataclass: unknown keyword arguments raise :func:`check_fields`'s
    error instead of the bare ``unexpected keyword argument``. Apply it above ``@dataclass``."""
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    init: Any = vars(cls)["__init__"]  # the one @dataclass generated

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        check_fields(cls.__name__, kwargs, valid)
        init(self, *args, **kwargs)

    type.__setattr__(cls, "__init__", __init__)
    return cls
