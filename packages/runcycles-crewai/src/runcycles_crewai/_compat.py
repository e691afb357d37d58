"""Runtime check of the installed ``crewai`` against the supported range."""

from __future__ import annotations

import re
import warnings
from importlib.metadata import PackageNotFoundError, version

from ._supported import BELOW, FRAMEWORK, OLDEST


def _release(text: str) -> tuple[int, ...]:
    # The numeric release segment only ("0.24.0rc1" -> (0, 24, 0)); enough to compare with
    # the plain bounds in _supported.
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def in_range(installed: str) -> bool:
    """Whether ``installed`` lies within ``[OLDEST, BELOW)``."""
    return _release(OLDEST) <= _release(installed) < _release(BELOW)


def check_supported() -> str | None:
    """Warn (once, at import) when the installed crewai is outside the tested range; returns the
    installed version, or None if it cannot be determined."""
    try:
        installed = version(FRAMEWORK)
    except PackageNotFoundError:  # a vendored or frozen copy: nothing to compare
        return None
    if not in_range(installed):
        warnings.warn(
            f"runcycles-crewai is tested with {FRAMEWORK} >={OLDEST},<{BELOW}; "
            f"{installed} is installed. Budget enforcement may not work as documented.",
            RuntimeWarning,
            stacklevel=3,
        )
    return installed
