"""Middleware behaviour beyond the shared contract."""

from __future__ import annotations

from runcycles_core.models import ReservationStatus
from runcycles_testing import DEFAULT_USAGE, Bench, FakeSpec

from .adapters import MiddlewareAsync, MiddlewareSync


async def test_repeated_tool_call_ids_are_separate_charges(bench: Bench) -> None:
    # The fake model gives every tool call the same id (as some providers do): two runs are
    # still two paid tool calls.
    bench.fund()
    spec = FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE, tool="lookup")
    for adapter in (MiddlewareAsync(), MiddlewareSync()):
        settings = bench.settings(tool_budgets={"lookup": 2_000})
        h = adapter.build(settings, spec)
        try:
            await h.run()
        finally:
            await h.aclose()
            await settings.async_client().aclose()
    tools = bench.reservations(kind="tool.lookup")
    assert [r.status for r in tools] == [ReservationStatus.COMMITTED] * 2
