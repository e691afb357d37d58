"""The shared plugin contract suite, four ways: callback handler or agent middleware, driven
through LangChain's sync or async API."""

from __future__ import annotations

from runcycles_testing import ContractSuite

from .adapters import HandlerAsync, HandlerSync, MiddlewareAsync, MiddlewareSync


class TestHandlerAsync(ContractSuite):
    adapter = HandlerAsync()


class TestHandlerSync(ContractSuite):
    adapter = HandlerSync()


class TestMiddlewareAsync(ContractSuite):
    adapter = MiddlewareAsync()


class TestMiddlewareSync(ContractSuite):
    adapter = MiddlewareSync()
