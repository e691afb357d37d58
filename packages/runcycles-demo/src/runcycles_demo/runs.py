"""The three runs of the demo and what each one records.

A :class:`Meter` (a LangChain callback on every run, guarded or not) prices each finished model
call with runcycles-core's pricing, the same way the plugin prices what it commits, and records
it on a :class:`Track`; it also enforces the demo's wall-clock cap, which is the only thing that
stops the unguarded run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from runcycles_core.pricing import Usage, price
from runcycles_langchain import BudgetExceededError

from .agent import SupportAgent
from .model import FakeGPT4o

__all__ = ["Meter", "Track", "WallClockCap", "run_agent", "run_fleet"]


class WallClockCap(Exception):
    """The demo's wall-clock cap was reached (raised before the next model call)."""


@dataclass
class Track:
    """One agent's run as the display, the closing table and the chart see it."""

    name: str
    calls: int = 0
    spent: int = 0  # µ¢, priced by runcycles-core from the model's reported usage
    context_tokens: int = 0
    state: str = "waiting"
    stopped_by: str = ""
    started: float | None = None
    ended: float | None = None
    #: (monotonic time, cumulative µ¢) after each call
    points: list[tuple[float, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        self.started = time.monotonic()
        self.state = "running"

    def record(self, amount: int, input_tokens: int) -> None:
        with self._lock:
            self.calls += 1
            self.spent += amount
            self.context_tokens = input_tokens
            self.points.append((time.monotonic(), self.spent))

    def stop(self, state: str, why: str) -> None:
        self.ended = time.monotonic()
        self.state = state
        self.stopped_by = why

    def elapsed(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or now or time.monotonic()) - self.started


class Meter(BaseCallbackHandler):
    """Prices every finished call onto a :class:`Track`; raises :class:`WallClockCap` before a
    call once ``deadline`` (monotonic) has passed."""

    raise_error = True
    run_inline = True

    def __init__(self, track: Track, deadline: float) -> None:
        super().__init__()
        self.track = track
        self.deadline = deadline

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        if time.monotonic() >= self.deadline:
            raise WallClockCap

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        message = getattr(response.generations[0][0], "message", None)
        meta = getattr(message, "usage_metadata", None) or {}
        usage = Usage(input_tokens=meta["input_tokens"], output_tokens=meta["output_tokens"])
        self.track.record(price("gpt-4o", usage, "openai").amount, usage.input_tokens)


def run_agent(
    track: Track,
    *,
    duration_s: float,
    guards: Sequence[BaseCallbackHandler] = (),
    metadata: dict[str, Any] | None = None,
    latency_s: float = 0.05,
    seed: int = 0,
) -> None:
    """Run one :class:`SupportAgent` until a denial, the wall-clock cap or an error; the outcome
    is left on ``track``. ``guards`` go after the meter (so the cap is checked first)."""
    model = FakeGPT4o(latency_s=latency_s, seed=seed)
    track.start()
    meter = Meter(track, deadline=time.monotonic() + duration_s)
    agent = SupportAgent(model, callbacks=[meter, *guards], metadata=metadata)
    try:
        agent.run()
        track.stop("finished", "quality check passed")  # the bug says this never happens
    except BudgetExceededError as exc:
        track.stop("denied", f"denied: {exc.error_code or 'budget'}")
    except WallClockCap:
        track.stop("capped", f"wall-clock cap ({duration_s:g} s)")
    except Exception as exc:  # shown in the table and fails the demo, never swallowed
        track.stop("error", f"{type(exc).__name__}: {exc}"[:120])


def run_fleet(
    tracks: Sequence[Track],
    *,
    duration_s: float,
    guards_for: Callable[[int], Sequence[BaseCallbackHandler]],
    metadata_for: Callable[[int], dict[str, Any]],
    latency_s: float = 0.05,
    seed: int = 0,
) -> None:
    """Run one agent per track on its own thread, all at once, and wait for all of them."""
    threads = [
        threading.Thread(
            target=run_agent,
            args=(track,),
            kwargs={
                "duration_s": duration_s,
                "guards": guards_for(i),
                "metadata": metadata_for(i),
                "latency_s": latency_s,
                "seed": seed + i + 1,
            },
            name=f"demo-{track.name}",
            daemon=True,
        )
        for i, track in enumerate(tracks)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
