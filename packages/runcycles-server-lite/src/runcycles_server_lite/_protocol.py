"""uvicorn's httptools protocol with a request-header deadline (uvicorn has none of its own).

Without it a client can open a connection and send nothing, or trickle a header byte at a time,
and hold the connection (and a slot of ``--max-connections``) for ever: the keep-alive timeout
only runs between requests. Here every connection must deliver a request's complete headers
within ``header_timeout`` seconds of connecting, or of the first byte of a following request;
otherwise it is closed. Once the headers are in, the body and the handler are not timed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("runcycles_server_lite.http")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that closes connections slow to send request headers.

    uvicorn builds it as ``http=functools.partial(HeaderTimeoutProtocol, header_timeout=s)``
    (a partial of a module-level class pickles, so it also reaches worker processes).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = 10.0,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request headers in time")
            self.transport.close()

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm_header_timer()  # also bounds a connection that never sends a byte

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._arm_header_timer()  # the first byte of a further request on the connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Idle again: the keep-alive timeout governs until the next request's first byte.
        self._awaiting_headers = True
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
