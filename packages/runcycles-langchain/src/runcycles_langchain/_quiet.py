"""Keep LangChain from printing a denial the caller handles.

``langchain_core.callbacks.manager`` logs ``Error in <Handler>.<event> callback: <repr>`` at
WARNING for every exception a callback raises, before re-raising it for ``raise_error``
handlers. For our denials that line is noise: the denial reaches the caller, who catches it.
Only those records are dropped: other handlers' errors, and our handlers' other errors
(outages), are still logged.
"""

from __future__ import annotations

import logging

from langchain_core.callbacks import BaseCallbackHandler

from runcycles_core.plugin import quiet_denials

__all__ = ["install"]

MANAGER_LOGGER = "langchain_core.callbacks.manager"
_PACKAGE = "runcycles_langchain"


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    pending = list(cls.__subclasses__())
    while pending:
        sub = pending.pop()
        found.append(sub)
        pending.extend(sub.__subclasses__())
    return found


def _our_handler_names() -> set[str]:
    """Names of callback handlers that are ours or derive from ours (a user's subclass may
    appear after import, so this is computed per record; such records are rare)."""
    return {
        cls.__name__
        for cls in _subclasses(BaseCallbackHandler)
        if any(base.__module__.startswith(_PACKAGE) for base in cls.__mro__)
    }


def _is_callback_report(record: logging.LogRecord) -> bool:
    """A manager record ``Error in %s.%s callback: %s`` about one of our handlers."""
    if not (isinstance(record.msg, str) and record.msg.startswith("Error in %s.%s callback")):
        return False
    args = record.args
    return isinstance(args, tuple) and len(args) >= 1 and args[0] in _our_handler_names()


def install() -> None:
    """Install the filter on LangChain's callback-manager logger (idempotent)."""
    quiet_denials(MANAGER_LOGGER, _is_callback_report)
