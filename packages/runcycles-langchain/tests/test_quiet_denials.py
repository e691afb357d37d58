"""A denial the caller catches leaves no "Error in CyclesCallbackHandler..." line behind;
other callback errors (another handler's, or our outage) are still logged."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from runcycles_core import CyclesUnavailableError
from runcycles_langchain import BudgetExceededError, CyclesCallbackHandler
from runcycles_testing import DEAD_URL, DEFAULT_USAGE, Bench, FakeSpec

from .fakes import ScriptedChatModel

MANAGER = "langchain_core.callbacks.manager"


def fake() -> ScriptedChatModel:
    return ScriptedChatModel.from_spec(FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE))


@pytest.fixture
def printed(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """What LangChain's callback manager prints to stderr (as an app with logging set up
    would see it)."""
    stream = logging.StreamHandler(sys.stderr)
    logging.getLogger(MANAGER).addHandler(stream)
    try:
        yield capsys
    finally:
        logging.getLogger(MANAGER).removeHandler(stream)


def _callback_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == MANAGER]


def test_handled_denial_is_silent(
    bench: Bench, caplog: pytest.LogCaptureFixture, printed: pytest.CaptureFixture[str]
) -> None:
    bench.fund({"": 1})
    caplog.set_level(logging.DEBUG)
    handler = CyclesCallbackHandler(bench.settings())
    with pytest.raises(BudgetExceededError) as denied:  # the caller handles the denial
        fake().invoke("hello", {"callbacks": [handler]})
    assert denied.value.error_code == "BUDGET_EXCEEDED"
    assert _callback_reports(caplog) == []
    assert "Error in CyclesCallbackHandler" not in printed.readouterr().err


async def test_handled_denial_is_silent_under_ainvoke(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    bench.fund({"": 1})
    caplog.set_level(logging.DEBUG)
    model = fake()
    model.callbacks = [CyclesCallbackHandler(bench.settings())]
    with pytest.raises(BudgetExceededError):
        await model.ainvoke("hello")
    assert _callback_reports(caplog) == []


class Boom(BaseCallbackHandler):
    raise_error = True

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")


def test_other_handlers_errors_are_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(RuntimeError):
        fake().invoke("hello", {"callbacks": [Boom()]})
    assert _callback_reports(caplog) == [
        "Error in Boom.on_chat_model_start callback: RuntimeError('boom')"
    ]


def test_our_outage_is_still_logged(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    bench.fund()
    caplog.set_level(logging.WARNING)
    settings = bench.settings(
        client_overrides={"base_url": DEAD_URL, "retry_connect_budget": 0}, estimate=10
    )
    with pytest.raises(CyclesUnavailableError):
        fake().invoke("hello", {"callbacks": [CyclesCallbackHandler(settings)]})
    reports = _callback_reports(caplog)
    assert len(reports) == 1
    assert reports[0].startswith("Error in CyclesCallbackHandler.on_chat_model_start callback")
