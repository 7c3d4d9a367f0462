"""A small in-process stand-in for Herald's publish endpoint, for unit tests only.

It answers like Herald (single and batch bodies, idempotency keys remembered per channel,
the error body shape), records every request, and can be scripted to fail: answer a status,
drop the connection, stall, or answer one batch item with an error.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

API_KEY = "test-key \"quoted\" \\ key"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    client_port: int


@dataclass
class FakeHerald:
    requests: list[Seen] = field(default_factory=list)
    #: Steps consumed one per request before the default behaviour applies: an int status
    #: (Herald-style error body), "drop", "close-after" (answer, then close the kept-alive
    #: connection), ("stall", seconds), ("chunked", status, body),
    #: or a callable(body) -> (status, body dict).
    script: deque = field(default_factory=deque)
    keys: dict[tuple[str, str], dict] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish_one(self, item: dict) -> dict:
        key = item.get("idempotency_key")
        if key is not None and (item["channel"], key) in self.keys:
            original = self.keys[(item["channel"], key)]
            return {"id": original["id"], "offset": original["offset"], "delivered_locally": 0, "duplicate": True}
        result = {"id": str(uuid.uuid4()), "offset": str(len(self.keys) + 1), "delivered_locally": 1}
        if key is not None:
            self.keys[(item["channel"], key)] = result
        return result

    def error(code: str, status: int) -> dict:  # type: ignore[misc]
        return {"error": {"code": code, "message": f"fake {code}"}}

    error = staticmethod(error)  # type: ignore[assignment]

    def delivered(self) -> list[dict]:
        """Every item the fake published (not counting duplicates)."""
        return list(self.keys.values())


_CODES = {400: "bad_request", 401: "unauthorized", 404: "unknown_channel", 413: "payload_too_large",
          422: "type_not_allowed", 429: "rate_limited", 500: "internal", 503: "broker_unavailable"}


def make_handler(fake: FakeHerald) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any, chunked: bool = False) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(data), 7):
                    part = data[i : i + 7]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            body = json.loads(raw.decode("utf-8"))
            fake.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                      self.client_address[1]))
            step = fake.script.popleft() if fake.script else None
            if step == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if step == "close-after":
                # Answer as if keeping the connection alive, then close it, as a server
                # reaping idle connections does.
                self.close_connection = True
                step = None
            if isinstance(step, tuple) and step[0] == "stall":
                time.sleep(step[1])
                step = None
            if isinstance(step, int):
                self.reply(step, FakeHerald.error(_CODES.get(step, f"code_{step}"), step))
                return
            if isinstance(step, tuple) and step[0] == "chunked":
                self.reply(step[1], step[2], chunked=True)
                return
            if callable(step):
                status, answer = step(body)
                self.reply(status, answer)
                return
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                self.reply(401, FakeHerald.error("unauthorized", 401))
                return
            if isinstance(body, list):
                self.reply(200, {"results": [fake.publish_one(item) for item in body]})
            else:
                self.reply(200, fake.publish_one(body))

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog (5) drops bursts of concurrent connects
    daemon_threads = True


def start() -> FakeHerald:
    fake = FakeHerald()
    fake.server = _Server(("127.0.0.1", 0), make_handler(fake))
    threading.Thread(target=fake.server.serve_forever, args=(0.02,), daemon=True).start()
    return fake


def stop(fake: FakeHerald) -> None:
    assert fake.server is not None
    fake.server.shutdown()
    fake.server.server_close()


Step = Callable[[Any], tuple[int, Any]]
