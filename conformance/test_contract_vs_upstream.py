"""The server's contract (``GET /openapi.json``) against the upstream Cycles specs: the same
operations (less the ones listed as not implemented), and for each the same request and
response schemas - properties, required sets, enums, types - recursively through references."""

from __future__ import annotations

from typing import Any

import pytest
from upstream import ADMIN_SPEC, NOT_IMPLEMENTED, RUNTIME_SPEC, load

from runcycles_server_lite.contract import OPERATIONS, Operation, openapi_document

OURS = openapi_document()
# Where the contract knowingly differs from upstream: the start of the difference, with why.
KNOWN_DIFFERENCES = {
    # Upstream's per-action notes require amount for every action; its schema leaves it to prose.
    "bulkActionBudgets request: required": "amount is required by every action",
    # The spec's prose lets subscriptions (and replays) name "custom.*" event types beside its
    # EventType enum; the server accepts and echoes them, so the contract says "string".
    **dict.fromkeys(
        (
            f"{op_id} {where}event_types[]: enum"
            for op_id, wheres in (
                ("createWebhookSubscription", ("request.", "201.subscription.")),
                ("createTenantWebhook", ("request.", "201.subscription.")),
                ("updateWebhookSubscription", ("request.", "200.")),
                ("updateTenantWebhook", ("request.", "200.")),
                ("getWebhookSubscription", ("200.",)),
                ("getTenantWebhook", ("200.",)),
                ("listWebhookSubscriptions", ("200.subscriptions[].",)),
                ("listTenantWebhooks", ("200.subscriptions[].",)),
                ("replayEvents", ("request.",)),
            )
            for where in wheres
        ),
        "custom.* event types (the spec's extension rule) are accepted and echoed",
    ),
    "bulkActionWebhooks request.filter.event_type: enum": "custom.* event types filter too",
    # Every event the server emits names who caused it (system when nobody did).
    **dict.fromkeys(
        (
            f"{op_id} 200.{where}actor: required"
            for op_id, where in (
                ("listEvents", "events[]."),
                ("listTenantEvents", "events[]."),
                ("getEvent", ""),
                ("getAdminOverview", "recent_denials[]."),
                ("getAdminOverview", "recent_expiries[]."),
            )
        ),
        "every emitted event has an actor type",
    ),
}


def _spec_of(op: Operation) -> str:
    return ADMIN_SPEC if op.admin_plane else RUNTIME_SPEC


def _upstream_operations(spec: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    found = {}
    for path, item in load(spec)["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and "operationId" in op:
                found[op["operationId"]] = (method, path, op)
    return found


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    name = None
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = doc["components"]["schemas"][name]
    return name, node


def _enum(doc: dict[str, Any], node: dict[str, Any]) -> list[Any] | None:
    _, node = _resolve(doc, node)
    return [node["const"]] if "const" in node else node.get("enum")


def differences(
    ours: dict[str, Any], theirs: dict[str, Any], where: str, seen: set[tuple[str, str]]
) -> list[str]:
    """How schema ``ours`` (in our document) differs from ``theirs`` (in the upstream one)."""
    our_name, o = _resolve(OURS, ours)
    their_name, t = _resolve(_DOC[0], theirs)
    key = (our_name or where, their_name or where)
    if our_name and their_name and key in seen:
        return []
    seen = seen | {key}
    out: list[str] = []
    o_type, t_type = o.get("type"), t.get("type")
    if t_type is not None and o_type != t_type:
        out.append(f"{where}: type {o_type!r}, upstream {t_type!r}")
    their_enum, our_enum = _enum(_DOC[0], t), _enum(OURS, o)
    if their_enum is not None and sorted(map(str, our_enum or [])) != sorted(map(str, their_enum)):
        out.append(f"{where}: enum {our_enum}, upstream {their_enum}")
    if "properties" in t:  # a free-form upstream object leaves its fields to us
        o_props, t_props = o.get("properties", {}), t.get("properties", {})
        if set(o_props) != set(t_props):
            out.append(
                f"{where}: properties +{sorted(set(o_props) - set(t_props))} "
                f"-{sorted(set(t_props) - set(o_props))}"
            )
        if set(o.get("required", [])) != set(t.get("required", [])):
            out.append(
                f"{where}: required {sorted(o.get('required', []))}, "
                f"upstream {sorted(t.get('required', []))}"
            )
        for prop in set(o_props) & set(t_props):
            out += differences(o_props[prop], t_props[prop], f"{where}.{prop}", seen)
    if t_type == "array" and "items" in t:
        out += differences(o.get("items", {}), t["items"], f"{where}[]", seen)
    return out


_DOC: list[dict[str, Any]] = [{}]  # the upstream document being compared against


def _compare(spec: str, ours: dict[str, Any], theirs: dict[str, Any], where: str) -> list[str]:
    _DOC[0] = load(spec)
    return differences(ours, theirs, where, set())


@pytest.mark.parametrize("spec", [RUNTIME_SPEC, ADMIN_SPEC])
def test_same_operations_less_the_listed_ones(spec: str) -> None:
    upstream = _upstream_operations(spec)
    skipped = NOT_IMPLEMENTED.get(spec, {})
    assert set(skipped) <= set(upstream), "listed as not implemented but not in the spec"
    ours = {op.operation_id: (op.method, op.path) for op in OPERATIONS if _spec_of(op) == spec}
    still_listed = set(ours) & set(skipped)
    assert not still_listed, f"implemented now: remove {sorted(still_listed)} from NOT_IMPLEMENTED"
    assert set(ours) == set(upstream) - set(skipped)
    for op_id, (method, path) in ours.items():
        assert (method, path) == upstream[op_id][:2], op_id


def _body_schema(
    entry: dict[str, Any] | None, doc: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    if not entry:
        return None
    while doc is not None and "$ref" in entry:  # a shared response (components/responses)
        entry = doc["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
    content = entry.get("content", {}).get("application/json")
    return content.get("schema") if content else None


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_request_and_responses_match(op: Operation) -> None:
    spec = _spec_of(op)
    _, _, theirs = _upstream_operations(spec)[op.operation_id]
    ours = OURS["paths"][op.path][op.method]
    problems: list[str] = []
    our_req, their_req = (
        _body_schema(ours.get("requestBody")),
        _body_schema(theirs.get("requestBody")),
    )
    assert (our_req is None) == (their_req is None), "request body"
    if our_req is not None and their_req is not None:
        problems += _compare(spec, our_req, their_req, f"{op.operation_id} request")
    their_statuses = {int(s) for s in theirs["responses"]}
    assert set(op.responses) <= their_statuses, "we document a status upstream does not"
    assert {s for s in op.responses if s < 300} == {s for s in their_statuses if s < 300}
    for status in op.responses:
        o = _body_schema(ours["responses"][str(status)])
        t = _body_schema(theirs["responses"][str(status)], load(spec))
        assert (o is None) == (t is None), status
        if o is not None and t is not None:
            problems += _compare(spec, o, t, f"{op.operation_id} {status}")
    assert [p for p in problems if not p.startswith(tuple(KNOWN_DIFFERENCES))] == []
