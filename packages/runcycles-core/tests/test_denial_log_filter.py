"""The kit's DenialLogFilter drops only records about our denials that the plugin claims."""

from __future__ import annotations

import logging
import uuid

import pytest

import runcycles_core as rc
from runcycles_core.plugin import DenialLogFilter, quiet_denials


def _log_while_handling(logger: logging.Logger, exc: Exception, msg: str = "Error in X") -> None:
    try:
        raise exc
    except Exception:
        logger.warning(msg)  # no exc_info, as frameworks do


def test_drops_only_claimed_denial_records(caplog: pytest.LogCaptureFixture) -> None:
    name = f"framework.{uuid.uuid4().hex}"
    logger = logging.getLogger(name)
    installed = quiet_denials(name, lambda r: r.getMessage().startswith("Error in"))
    assert quiet_denials(name, installed.ours) is installed  # once per logger
    assert sum(isinstance(f, DenialLogFilter) for f in logger.filters) == 1
    caplog.set_level(logging.WARNING, logger=name)
    denial = rc.InsufficientBudgetError("no", error_code="BUDGET_EXCEEDED", status=409)
    _log_while_handling(logger, denial)  # dropped
    _log_while_handling(logger, denial, "unrelated line")  # not claimed: kept
    _log_while_handling(logger, RuntimeError("boom"))  # not a denial: kept
    _log_while_handling(logger, rc.CyclesTransportError("down"))  # an outage: kept
    logger.warning("Error in Y", exc_info=denial)  # denial given as exc_info: dropped
    logger.warning("Error in Z")  # nothing in flight: kept
    assert [r.getMessage() for r in caplog.records] == [
        "unrelated line",
        "Error in X",
        "Error in X",
        "Error in Z",
    ]
