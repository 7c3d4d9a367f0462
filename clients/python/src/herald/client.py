"""The synchronous publisher, on the standard library's ``http.client``.

No third-party dependency: a Django or Celery process that publishes a few messages per
request needs nothing beyond Python. Connections are kept alive and pooled per publisher,
so it is safe to share one :class:`Publisher` between threads.
"""

from __future__ import annotations

import http.client
import random
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ._core import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    BatchItem,
    Endpoint,
    Message,
    Plan,
    PublishResult,
    Response,
    RetryPolicy,
    Send,
    Sleep,
    batch_plan,
    encode_all,
    single_plan,
    split_batches,
)
from .errors import ConfigurationError, TransportError

_Conn = TypeVar("_Conn")


class _Options(Generic[_Conn]):
    """Settings and the idle-connection pool shared by the sync and async publishers."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_batch: int = MAX_BATCH,
        max_body_bytes: int = MAX_BODY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url, api_key)
        if not timeout or timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, not {timeout!r}")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ConfigurationError(f"max_batch must be 1..{MAX_BATCH}, not {max_batch!r}")
        if max_body_bytes < 64:
            raise ConfigurationError(f"max_body_bytes is too small: {max_body_bytes!r}")
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        if self.endpoint.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self.ssl_context = ssl_context
        self.rng = rng
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()


class Publisher(_Options[http.client.HTTPConnection]):
    """Publishes to Herald over HTTP(S), blocking.

    >>> herald = Publisher("http://127.0.0.1:8080", api_key="...")
    >>> herald.publish("notifications", "notification", {"title": "Shipped"}, users=["42"])

    ``timeout`` bounds each attempt (connect, send and read); ``retry`` bounds the retries
    (see :class:`RetryPolicy`). Use as a context manager, or call :meth:`close`, to close
    the pooled connections.
    """

    def publish(
        self,
        channel: str,
        type: str,
        data: Mapping[str, Any],
        *,
        users: Sequence[str | int] | None = None,
        idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Publishes one message and returns Herald's result; raises an
        :class:`~herald.errors.APIError` subclass for a refusal. ``tags`` (a dict of short
        strings) let subscribers filter on the node; see :class:`Message` for the limits."""
        extra = {"idempotency_key": idempotency_key} if idempotency_key is not None else {}
        return self.send(Message(channel, type, data, users, tags=tags, **extra))  # type: ignore[arg-type]

    def send(self, message: Message) -> PublishResult:
        """Publishes a prepared :class:`Message` (keep it to retry with the same key)."""
        result: PublishResult = self._run(single_plan(message, self.retry, self.rng))
        return result

    def publish_many(self, messages: Iterable[Message]) -> list[BatchItem]:
        """Publishes messages in batches (at most ``max_batch`` items and ``max_body_bytes``
        per request), in order. Returns, per message, its :class:`PublishResult` or the
        :class:`~herald.errors.HeraldError` Herald gave for it. An error of a whole request
        (401, network down after retries) is raised; calling again with the same
        ``Message`` objects is safe: what was published answers ``duplicate=True``."""
        msgs, encoded = encode_all(messages)
        out: list[BatchItem] = []
        for chunk in split_batches(encoded, self.max_batch, self.max_body_bytes):
            part = [msgs[i] for i in chunk]
            out.extend(self._run(batch_plan(part, [encoded[i] for i in chunk], self.retry, self.rng)))
        return out

    def close(self) -> None:
        """Closes the idle pooled connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, plan: Plan) -> Any:
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = plan.send(None)
                else:
                    assert isinstance(step, Send)
                    step = plan.send(self._post(step.body))
        except StopIteration as done:
            return done.value

    def _connection(self, pooled: bool) -> tuple[http.client.HTTPConnection, bool]:
        """A pooled connection (and True) when ``pooled`` and one is idle, else a new one
        (and False)."""
        with self._lock:
            if pooled and self._idle:
                return self._idle.pop(), True
        ep = self.endpoint
        if ep.scheme == "https":
            return http.client.HTTPSConnection(ep.host, ep.port, timeout=self.timeout, context=self.ssl_context), False
        return http.client.HTTPConnection(ep.host, ep.port, timeout=self.timeout), False

    def _post(self, body: bytes) -> Response | TransportError:
        pooled = True
        while True:
            conn, reused = self._connection(pooled)
            try:
                conn.putrequest("POST", self.endpoint.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.endpoint.headers(body).items():
                    conn.putheader(name, value)
                conn.endheaders(body)
                reply = conn.getresponse()
                data = reply.read()
                response = Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and isinstance(e, (ConnectionError, http.client.RemoteDisconnected)):
                    # The server closed an idle kept-alive connection: try a fresh one at
                    # once, not counted as a retry (the idempotency key makes it safe anyway).
                    pooled = False
                    continue
                return TransportError(f"POST {self.endpoint.host}:{self.endpoint.port}{self.endpoint.path}: {e!r}")
            if reply.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return response
