"""Without the ``agents`` extra, asking for CyclesMiddleware says what to install."""

from __future__ import annotations

import sys

import pytest

import runcycles_langchain
from runcycles_core.plugin import MissingExtraError


def test_middleware_without_langchain_names_the_agents_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import langchain...` fail as if it were not installed.
    for name in list(sys.modules):
        if name == "langchain" or name.startswith("langchain."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "langchain", None)
    monkeypatch.delitem(sys.modules, "runcycles_langchain._middleware", raising=False)
    with pytest.raises(MissingExtraError) as caught:
        runcycles_langchain.CyclesMiddleware  # noqa: B018
    assert "pip install 'runcycles-langchain[agents]'" in str(caught.value)
    assert "'langchain' package" in str(caught.value)
    with pytest.raises(ImportError, match=r"runcycles-langchain\[agents\]"):
        from runcycles_langchain import CyclesMiddleware  # noqa: F401
