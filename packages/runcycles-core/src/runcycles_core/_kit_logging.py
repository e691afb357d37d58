"""Quiet handled denials: a framework that logs every callback exception must not print our
denials, which the caller catches and handles like any other "no"."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from .errors import BudgetExceededError

__all__ = ["DenialLogFilter", "quiet_denials"]


def _in_flight(record: logging.LogRecord) -> BaseException | None:
    if record.exc_info and record.exc_info[1] is not None:
        return record.exc_info[1]
    # Frameworks log from inside their `except` block without exc_info: the exception being
    # handled on this thread is still the one the record is about.
    return sys.exc_info()[1]


class DenialLogFilter(logging.Filter):
    """Drops records about a :class:`BudgetExceededError` that ``ours`` accepts.

    A record is dropped only while a denial is being handled (the record's ``exc_info``, or the
    exception in flight on the logging thread) *and* ``ours(record)`` says the record is the
    framework's report of one of our hooks; every other record passes, including our hooks'
    other errors (an outage is worth a warning).
    """

    def __init__(self, ours: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.ours = ours

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(_in_flight(record), BudgetExceededError) and self.ours(record))


def quiet_denials(logger_name: str, ours: Callable[[logging.LogRecord], bool]) -> DenialLogFilter:
    """Install (once per logger) a :class:`DenialLogFilter` on the framework's logger
    ``logger_name``; returns the installed filter."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, DenialLogFilter):
            existing.ours = ours
            return existing
    installed = DenialLogFilter(ours)
    logger.addFilter(installed)
    return installed
