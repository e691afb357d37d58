"""Plugin kit: the import-time check of the installed framework against the tested range."""

from __future__ import annotations

import re
import warnings
from importlib.metadata import PackageNotFoundError, version

__all__ = ["check_supported", "in_range"]


def _release(text: str) -> tuple[int, ...]:
    # The numeric release segment only ("0.24.0rc1" -> (0, 24, 0)), padded so "1" == "1.0.0".
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def in_range(installed: str, oldest: str, below: str) -> bool:
    """Whether version ``installed`` lies within ``[oldest, below)``."""
    return _release(oldest) <= _release(installed) < _release(below)


def check_supported(plugin: str, framework: str, oldest: str, below: str) -> str | None:
    """Warn (a :class:`RuntimeWarning` naming the tested range) when the installed
    ``framework`` distribution is outside ``[oldest, below)``; call it once at the plugin's
    import. Returns the installed version, or None if it cannot be determined (a vendored or
    frozen copy: nothing to compare)."""
    try:
        installed = version(framework)
    except PackageNotFoundError:
        return None
    if not in_range(installed, oldest, below):
        warnings.warn(
            f"{plugin} is tested with {framework} >={oldest},<{below}; {installed} is "
            "installed. Budget enforcement may not work as documented.",
            RuntimeWarning,
            stacklevel=3,
        )
    return installed
