"""Optional dependencies: a missing one names the extra that installs it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["MissingExtraError", "needs_extra"]


class MissingExtraError(ImportError):
    """A feature needs a package an optional extra installs; the message says which."""


@contextlib.contextmanager
def needs_extra(feature: str, install: str, *modules: str) -> Iterator[None]:
    """Turn a missing optional package inside the block into :class:`MissingExtraError`.

    ``feature`` is what the user asked for (``"CyclesMiddleware"``), ``install`` the pip
    requirement providing it (``"runcycles-langchain[agents]"``), ``modules`` the top-level
    packages the extra brings. Only those are translated: any other missing module is a real
    bug and propagates unchanged.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in modules:
            raise
        raise MissingExtraError(
            f"{feature} needs the {missing!r} package, which is not installed; "
            f"install it with: pip install '{install}'",
            name=exc.name,
        ) from exc
