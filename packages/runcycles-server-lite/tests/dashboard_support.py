"""Helpers for the dashboard tests: a browser-like client and a reader for the pages' tables."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx
import pytest

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle


@dataclass
class Row:
    """One ``<tr data-scope=...>`` of the scope tree: its classes and its cells by class."""

    scope: str
    unit: str
    classes: set[str]
    cells: dict[str, str] = field(default_factory=dict)


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self._row: Row | None = None
        self._cell: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-scope" in a:
            self._row = Row(a["data-scope"], a.get("data-unit", ""), set(a["class"].split()))
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = a.get("class", "").split(" ")[-1]
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.cells[self._cell] = " ".join("".join(self._text).split())
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def scope_rows(html: str) -> dict[tuple[str, str], Row]:
    """The scope tree of a tenant page: ``(scope, unit) -> Row``."""
    parser = _Rows()
    parser.feed(html)
    return {(r.scope, r.unit): r for r in parser.rows}


def hidden(html: str, name: str) -> str:
    """The value of the first hidden input called ``name``."""
    m = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden {name} field"
    return m.group(1)


def browser(server: ServerHandle) -> httpx.Client:
    """A client that behaves like a same-origin browser: it keeps cookies and sends the
    server's own Origin on every request (as browsers do on POST)."""
    return httpx.Client(base_url=server.base_url, timeout=10, headers={"Origin": server.base_url})


def clear_login_failures(server: ServerHandle) -> None:
    """Forget this machine's failed sign-ins: tests share one server and one address."""

    async def clear(store: Store) -> None:
        await store.redis.delete(store.keys.dashboard_login_failures("127.0.0.1"))

    server.run_store(clear)


@pytest.fixture
def client(server: ServerHandle) -> Iterator[httpx.Client]:
    """A same-origin browser on the shared server, with no failed sign-ins counted yet."""
    clear_login_failures(server)
    with browser(server) as c:
        yield c


def sign_in(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/dashboard/login", data={"api_key": key})
