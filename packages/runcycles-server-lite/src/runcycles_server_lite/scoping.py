"""Subject → scopes, and the ids whose format carries their owning tenant."""

from __future__ import annotations

import re
import uuid

from .models import Subject

_RESERVATION_ID = re.compile(r"^res_([a-z0-9-]{1,64})_([0-9a-f]{32})$")


def derive_scopes(subject: Subject) -> list[str]:
    """Cumulative canonical scope paths for the levels present in ``subject``, tenant → leaf.

    ``{tenant: Acme, agent: bot}`` → ``["tenant:acme", "tenant:acme/agent:bot"]``: only the
    given levels, in canonical order, values lowercased; gaps are skipped, never filled.
    """
    scopes: list[str] = []
    path = ""
    for level, value in subject.levels():
        path = f"{path}/{level}:{value}" if path else f"{level}:{value}"
        scopes.append(path)
    return scopes


def new_reservation_id(tenant: str) -> str:
    """``res_<tenant>_<32 hex>``.

    The owning tenant is part of the id because every reservation key lives in its tenant's
    Redis slot: an admin acting on behalf of a tenant (get, release) finds the record without
    any global index, and a tenant presenting another tenant's id is told 403, not 404.
    """
    return f"res_{tenant}_{uuid.uuid4().hex}"


def reservation_tenant(reservation_id: str) -> str | None:
    """The tenant encoded in a reservation id, or None if the id is not one of ours."""
    m = _RESERVATION_ID.match(reservation_id)
    return m.group(1) if m else None


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def segments_match(scope_path: str, filters: dict[str, str]) -> bool:
    """True if every ``level → value`` filter is a whole segment of ``scope_path``."""
    if not filters:
        return True
    segments = set(scope_path.split("/"))
    return all(f"{level}:{value.lower()}" in segments for level, value in filters.items())
