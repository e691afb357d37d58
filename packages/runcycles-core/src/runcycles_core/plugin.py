"""The plugin kit: what every framework integration needs, written once.

A plugin only maps its framework's hooks onto these calls; budget logic lives here.

Configuration
    :class:`CyclesSettings` is what every plugin entry point accepts (``client=``, the subject
    fields, ``estimate=``, ``shadow=``, ``outage_policy=``, ``tool_budgets=``…);
    :func:`resolve_settings` turns ``settings=`` / keyword fields into one, installing the
    plugin's own denial exception type.

Before a call
    :func:`reserve_model_step` / :func:`areserve_model_step` (or :func:`model_guard` /
    :func:`amodel_guard` and ``.reserve()``) with a :class:`ModelCall` (estimate priced from the
    model and prompt, or the user's ``estimate=``; idempotency key from the framework's run
    identity, so a step an earlier attempt already paid for is not charged again);
    :func:`reserve_tool_step` / :func:`tool_guard` (and async twins) gate tools as action kind
    ``tool.<name>``. :func:`areserve_uncancellable` wraps an async reservation so a cancelled
    caller never leaves a hold behind.

After a call
    :func:`settle_model_call` / :func:`asettle_model_call` settle a model call however it
    ended, by the rule below. Map the framework's usage with :func:`normalize_usage` and feed
    streamed deltas into a :class:`Received`. The async settle survives cancellation of the
    caller (:func:`uncancellable` does the same for any other settlement step).

At import
    :func:`check_supported` warns (naming the tested range) when the installed framework is
    outside the range the plugin is tested with; :func:`quiet_denials` keeps a framework that
    logs every callback exception from printing a denial the caller handles;
    :func:`needs_extra` turns a missing optional framework package into an error naming the
    extra to install.

The settlement rule (one for every plugin)
------------------------------------------

Usage reported by the provider always wins: it is priced and committed
(``actual_source=priced_usage``), cache and reasoning tokens included. Otherwise the request
reached the provider, which bills the prompt and whatever it generated, so we charge *the
prompt plus what we received*, counted offline with the pricing's token counter
(``actual_source=counted``; ``counted_input_tokens`` / ``counted_output_tokens`` and
``outcome`` in the commit metadata). Received output counts as its text's tokens plus each
output item's, and at least one token per received chunk.

(a) **provider reported no usage** (the call completed): commit the counted prompt + output
    (``outcome=no_usage``); if the plugin knows neither prompt nor output, the estimate
    (``actual_source=estimate``).
(b) **stream stopped early** by the consumer (``GeneratorExit``, ``break``/``aclose``): commit
    the counted prompt + the chunks received so far (``outcome=stopped``).
(c) **cancelled call** (``CancelledError``, also ``KeyboardInterrupt``): commit the counted
    prompt + anything received so far, the prompt alone if nothing was
    (``outcome=cancelled`` / ``interrupted``). A cancellation while *reserving* releases.
(d) **call raised** (any ``Exception``): after partial output, commit the counted prompt +
    received output (``outcome=failed``); before any output, release the hold (a failed
    request is not billed).

Every path ends in exactly one commit or release, never a hold left to expire and never a
second charge (a guard already settled, e.g. by a usage chunk that arrived before the stream
was stopped, is left as is). Unknown model prices fall back to committing the estimate.
"""

from __future__ import annotations

from ._kit_extras import MissingExtraError, needs_extra
from ._kit_guards import (
    acommit_usage,
    amodel_guard,
    areserve_model_step,
    areserve_tool_step,
    atool_guard,
    commit_usage,
    model_guard,
    reserve_model_step,
    reserve_tool_step,
    tool_guard,
)
from ._kit_logging import DenialLogFilter, quiet_denials
from ._kit_settings import LEVELS, CyclesSettings, ModelCall, estimate_for, resolve_settings
from ._kit_settle import (
    Received,
    areserve_uncancellable,
    asettle_model_call,
    counted_usage,
    normalize_usage,
    settle_model_call,
    uncancellable,
)
from ._kit_supported import check_supported, in_range

__all__ = [
    "LEVELS",
    "CyclesSettings",
    "DenialLogFilter",
    "MissingExtraError",
    "ModelCall",
    "Received",
    "acommit_usage",
    "amodel_guard",
    "areserve_model_step",
    "areserve_tool_step",
    "areserve_uncancellable",
    "asettle_model_call",
    "atool_guard",
    "check_supported",
    "commit_usage",
    "counted_usage",
    "estimate_for",
    "in_range",
    "model_guard",
    "needs_extra",
    "normalize_usage",
    "quiet_denials",
    "reserve_model_step",
    "reserve_tool_step",
    "resolve_settings",
    "settle_model_call",
    "tool_guard",
    "uncancellable",
]
