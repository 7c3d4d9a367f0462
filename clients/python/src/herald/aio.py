"""The asyncio publisher: the same API as :class:`herald.Publisher`, awaiting instead of
blocking, with no dependency beyond the standard library.

It speaks HTTP/1.1 itself over non-blocking sockets driven by the running loop
(``loop.sock_connect``/``sock_sendall``/``sock_recv``, TLS through ``ssl.SSLObject`` on
memory buffers), rather than through asyncio streams or httpx. The reason is Django:
``async_to_sync`` runs each call in a fresh event loop that it closes afterwards, and stream
transports (httpx's included) belong to the loop that opened them, so a pooled connection
would be unusable, or fail with "Event loop is closed", on the next call. A bare socket
belongs to no loop: the pool here serves every loop and thread of the process.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._core import (
    BatchItem,
    Message,
    Plan,
    PublishResult,
    Response,
    Send,
    Sleep,
    batch_plan,
    encode_all,
    single_plan,
    split_batches,
)
from .client import _Options
from .errors import TransportError

_MAX_HEAD = 64 * 1024


class _Connection:
    """One keep-alive HTTP/1.1 connection on a non-blocking socket (TLS optional)."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject | None, incoming: ssl.MemoryBIO | None,
                 outgoing: ssl.MemoryBIO | None) -> None:
        self.sock, self.tls, self.incoming, self.outgoing = sock, tls, incoming, outgoing
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as e:
                sock.close()
                last = e
                continue
            except BaseException:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is None:
                return cls(sock, None, None, None)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            conn = cls(sock, context.wrap_bio(incoming, outgoing, server_hostname=host), incoming, outgoing)
            try:
                await conn._handshake()
            except BaseException:
                conn.close()
                raise
            return conn
        raise last

    def close(self) -> None:
        self.sock.close()

    async def _flush(self) -> None:
        assert self.outgoing is not None
        data = self.outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _feed(self) -> None:
        assert self.incoming is not None
        chunk = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if chunk:
            self.incoming.write(chunk)
        else:
            self.incoming.write_eof()

    async def _handshake(self) -> None:
        assert self.tls is not None
        while True:
            try:
                self.tls.do_handshake()
                await self._flush()
                return
            except ssl.SSLWantReadError:
                await self._flush()
                await self._feed()

    async def send(self, data: bytes) -> None:
        if self.tls is None:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
            return
        self.tls.write(data)
        await self._flush()

    async def recv(self) -> bytes:
        """Some bytes, or ``b""`` at the end of the stream."""
        if self.tls is None:
            return await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._feed()
            except ssl.SSLZeroReturnError:
                return b""

    async def _fill(self, at_least: int) -> None:
        while len(self.buffer) < at_least:
            chunk = await self.recv()
            if not chunk:
                raise ConnectionError("connection closed before the end of the response")
            self.buffer += chunk

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise ConnectionError("response line too long")
            await self._fill(len(self.buffer) + 1)
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def _take(self, size: int) -> bytes:
        await self._fill(size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def request(self, head: bytes, body: bytes) -> tuple[Response, bool]:
        """Sends one request; returns the response and whether the connection may be reused."""
        await self.send(head + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise ConnectionError("response head too long")
            await self._fill(len(self.buffer) + 1)
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        reusable = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            data = bytearray()
            while True:
                size = int((await self._line()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while await self._line():  # trailers
                        pass
                    break
                data += await self._take(size)
                await self._take(2)
            payload = bytes(data)
        elif "content-length" in headers:
            payload = await self._take(int(headers["content-length"]))
        else:
            while chunk := await self.recv():
                self.buffer += chunk
            payload, reusable = bytes(self.buffer), False
            self.buffer.clear()
        return Response(status, headers, payload), reusable


class AsyncPublisher(_Options[_Connection]):
    """Publishes to Herald without blocking the event loop.

    >>> async with AsyncPublisher("http://127.0.0.1:8080", api_key="...") as herald:
    ...     await herald.publish("alerts", "alert", {"text": "Maintenance at 22:00"})

    Same options, results, errors and retries as :class:`herald.Publisher`; one instance
    may be shared by tasks, threads and event loops.
    """

    async def publish(
        self,
        channel: str,
        type: str,
        data: Mapping[str, Any],
        *,
        users: Sequence[str | int] | None = None,
        idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Publishes one message; see :meth:`herald.Publisher.publish`."""
        extra = {"idempotency_key": idempotency_key} if idempotency_key is not None else {}
        return await self.send(Message(channel, type, data, users, tags=tags, **extra))  # type: ignore[arg-type]

    async def send(self, message: Message) -> PublishResult:
        """Publishes a prepared :class:`Message`."""
        result: PublishResult = await self._run(single_plan(message, self.retry, self.rng))
        return result

    async def publish_many(self, messages: Iterable[Message]) -> list[BatchItem]:
        """Publishes in batches; see :meth:`herald.Publisher.publish_many`."""
        msgs, encoded = encode_all(messages)
        out: list[BatchItem] = []
        for chunk in split_batches(encoded, self.max_batch, self.max_body_bytes):
            part = [msgs[i] for i in chunk]
            out.extend(await self._run(batch_plan(part, [encoded[i] for i in chunk], self.retry, self.rng)))
        return out

    async def aclose(self) -> None:
        """Closes the idle pooled connections."""
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _run(self, plan: Plan) -> Any:
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = plan.send(None)
                else:
                    assert isinstance(step, Send)
                    step = plan.send(await self._post(step.body))
        except StopIteration as done:
            return done.value

    async def _post(self, body: bytes) -> Response | TransportError:
        ep = self.endpoint
        head = f"POST {ep.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in ep.headers(body).items()) + "\r\n"
        pooled = True
        while True:
            with self._lock:
                conn = self._idle.pop() if pooled and self._idle else None
            reused, reusable = conn is not None, False
            try:
                async def attempt() -> Response:
                    nonlocal conn, reusable
                    if conn is None:
                        conn = await _Connection.open(ep.host, ep.port, self.ssl_context)
                    response, reusable = await conn.request(head.encode("latin-1"), body)
                    return response

                return await asyncio.wait_for(attempt(), self.timeout)
            except (OSError, asyncio.TimeoutError, ValueError) as e:
                reusable = False
                if reused and isinstance(e, ConnectionError):
                    # An idle kept-alive connection the server had closed: try a fresh one
                    # at once, not counted as a retry (the idempotency key makes it safe).
                    pooled = False
                    continue
                what = "timed out" if isinstance(e, asyncio.TimeoutError) else repr(e)
                return TransportError(f"POST {ep.host}:{ep.port}{ep.path}: {what}")
            finally:
                if conn is not None:
                    if reusable:
                        with self._lock:
                            self._idle.append(conn)
                    else:
                        conn.close()
