"""Keep CrewAI from printing a denial the caller handles.

A flow (crews run as one) logs ``Error executing listener <name>: <exception>`` at ERROR for
every exception a step raises, before re-raising it. For our denials that line is noise: the
denial reaches the caller, who catches it. Only records about a denial in flight are dropped;
every other error, ours included (an outage), is still logged.
"""

from __future__ import annotations

import logging

from runcycles_core.plugin import quiet_denials

__all__ = ["install"]

FLOW_LOGGER = "crewai.flow.runtime"


def _is_listener_report(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg.startswith("Error executing listener")


def install() -> None:
    """Install the filter on CrewAI's flow-runtime logger (idempotent)."""
    quiet_denials(FLOW_LOGGER, _is_listener_report)
