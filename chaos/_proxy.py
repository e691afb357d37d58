"""An in-process asyncio TCP proxy between the server and its Redis that can drop or stall
every connection on command (a network fault the server cannot tell from a real one)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

PASS, DROP, STALL = "pass", "drop", "stall"


class FaultProxy:
    """Forwards loopback ``listen_port`` to ``target_port`` on its own thread and event loop.

    ``drop``: open connections are reset and new ones closed at once. ``stall``: nothing is
    forwarded either way (bytes wait in the socket buffers) until the mode changes back.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = PASS
        self._resume = threading.Event()
        self._resume.set()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._gate: asyncio.Event | None = None

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await asyncio.start_server(self._client, sock=self._sock)

    def set_mode(self, mode: str) -> None:
        asyncio.run_coroutine_threadsafe(self._set(mode), self._loop).result(10)

    async def _set(self, mode: str) -> None:
        assert self._gate is not None
        self.mode = mode
        if mode == DROP:
            for w in list(self._writers):
                transport = w.transport
                if isinstance(transport, asyncio.Transport):
                    transport.abort()  # RST, like a dead peer or a firewall
        if mode == STALL:
            self._gate.clear()
        else:
            self._gate.set()

    @contextlib.contextmanager
    def fault(self, mode: str) -> Iterator[None]:
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode(PASS)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == DROP:
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_w))
        try:
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        finally:
            for w in (writer, up_w):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        assert self._gate is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self._gate.wait()
                data = await src.read(65536)
                if not data:
                    break
                await self._gate.wait()  # a stall begun while reading holds this chunk
                if self.mode == DROP:
                    break
                dst.write(data)
                await dst.drain()
        dst.transport.abort() if self.mode == DROP else dst.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
