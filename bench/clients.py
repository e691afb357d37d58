"""Load-generating HTTP clients behind one small interface.

aiohttp is the default: on this machine httpx's AsyncClient costs ~0.7-2.6 ms of client CPU
per request and its shared connection pool slows down as concurrency grows (113 req/s at 50
clients against a hello-world that aiohttp drives at 2,300 req/s from the same process), so it
would measure itself instead of the server. ``--client httpx`` keeps it available.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
import httpx


class LoadClient(Protocol):
    async def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class AiohttpClient:
    """One aiohttp session with a connection pool of ``connections``."""

    def __init__(self, base_url: str, connections: int, headers: dict[str, str]) -> None:
        self._session = aiohttp.ClientSession(
            base_url,
            headers=headers,
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
            timeout=aiohttp.ClientTimeout(total=30),
            skip_auto_headers=("User-Agent",),
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self._session.post(path, data=body) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        await self._session.close()


class HttpxClient:
    """One ``httpx.AsyncClient`` with a connection pool sized to ``connections``."""

    def __init__(self, base_url: str, connections: int, headers: dict[str, str]) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=30,
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        r = await self._client.post(path, content=body)
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self._client.aclose()


KINDS: dict[str, type[AiohttpClient] | type[HttpxClient]] = {
    "aiohttp": AiohttpClient,
    "httpx": HttpxClient,
}


def make_client(kind: str, base_url: str, connections: int, headers: dict[str, str]) -> LoadClient:
    client: LoadClient = KINDS[kind](base_url, connections, headers)
    return client
