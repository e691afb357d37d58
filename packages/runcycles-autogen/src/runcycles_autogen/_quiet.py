"""Keep AutoGen from printing a denial the caller handles.

autogen-core's runtime logs ``Error processing publish message for <agent>`` at ERROR, with the
traceback, for every exception an agent's handler raises; the team then re-raises it to the
caller (as a ``RuntimeError`` that :func:`~runcycles_autogen.unwrap_team_error` turns back into
the typed denial). For our denials that traceback is noise. Only records about a denial are
dropped; every other error, ours included (an outage), is still logged.
"""

from __future__ import annotations

import logging

from runcycles_core.plugin import quiet_denials

__all__ = ["install"]

RUNTIME_LOGGER = "autogen_core"


def _is_handler_report(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg.startswith("Error processing ")


def install() -> None:
    """Install the filter on autogen-core's runtime logger (idempotent)."""
    quiet_denials(RUNTIME_LOGGER, _is_handler_report)
