"""Helpers for the integration tests: the node under test, user tokens, and WebSocket
inboxes collecting what the node pushes to a user."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import websockets


@dataclass(frozen=True)
class Node:
    url: str
    api_key: str
    jwt_secret: str

    def token(self, user: str, lifetime: int = 600) -> str:
        """An HS256 JWT for ``user`` (claim ``user_id``), as the backend would issue."""

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = b64(json.dumps({"user_id": user, "exp": int(time.time()) + lifetime}).encode())
        sig = hmac.new(self.jwt_secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest()
        return f"{head}.{claims}.{b64(sig)}"

    def ws_url(self, user: str) -> str:
        base = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
        return f"{base}/ws/notifications/?token={urllib.parse.quote(self.token(user))}"


def hostile_user(tag: str) -> str:
    """A fresh user id with the characters that break naive quoting."""
    return f'CORP\\{tag}"🦀\'{uuid.uuid4().hex}'


class Inbox:
    """A WebSocket connected to the node as one user, collecting pushes in the background."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self.arrived.set()
        except websockets.ConnectionClosed:
            pass

    def pushes(self, kind: str | None = None) -> list[dict]:
        return [f for f in self.frames if "data" in f and (kind is None or f.get("type") == kind)]

    async def wait_for(self, count: int, kind: str | None = None, timeout: float = 10.0) -> list[dict]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.pushes(kind)) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"expected {count} pushes, got {len(self.pushes(kind))}: {self.frames[-5:]}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.pushes(kind)

    async def settle(self, seconds: float = 1.0) -> list[dict]:
        """Waits a moment for anything that should not arrive, then returns the pushes."""
        await asyncio.sleep(seconds)
        return self.pushes()


async def connect(node: Node, user: str) -> Inbox:
    ws = await websockets.connect(node.ws_url(user), max_queue=None, max_size=2**22)
    # Let the node finish joining the auto-subscribed channels; a ping round trip orders it.
    await ws.send(json.dumps({"type": "ping"}))
    inbox = Inbox(ws)
    deadline = time.monotonic() + 10
    while not any(f.get("type") == "pong" for f in inbox.frames):
        assert time.monotonic() < deadline, "no pong from the node"
        await asyncio.sleep(0.02)
    return inbox


@contextlib.asynccontextmanager
async def inbox_for(node: Node, user: str) -> AsyncIterator[Inbox]:
    """A connected :class:`Inbox` for ``user``, closed on exit."""
    inbox = await connect(node, user)
    try:
        yield inbox
    finally:
        await inbox.ws.close()
        inbox.task.cancel()
