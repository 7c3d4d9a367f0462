"""The client against a real herald-node: what is published arrives on the users'
WebSockets, exactly once, with Herald's refusals raised as their typed exceptions."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

import herald
from herald import AsyncPublisher, Message, Publisher, RetryPolicy
from herald import errors as E
from nodekit import Node, hostile_user, inbox_for

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_retries=4, initial_backoff=0.05, max_backoff=0.2)


def test_sync_publish_reaches_only_the_named_user(node: Node):
    alice, bob = hostile_user("alice"), hostile_user("bob")
    data = {"id": 1, "title": 'Order "PO-1" \\ shipped 🚚', "content": "x" * 2000}

    async def scenario():
        async with inbox_for(node, alice) as a, inbox_for(node, bob) as b:
            with Publisher(node.url, node.api_key, retry=FAST) as pub:
                result = await asyncio.to_thread(pub.publish, "notifications", "notification", data, users=[alice])
            [push] = await a.wait_for(1, "notification")
            assert push["data"] == data and push["channel"] == "notifications" and push["id"] == result.id
            assert result.offset is not None and push.get("offset") == result.offset, (result, push)
            assert not result.duplicate
            await b.settle(0.5)
            assert b.pushes("notification") == []

    asyncio.run(scenario())


def test_tags_reach_the_subscriber_and_the_node_enforces_their_limits(node: Node):
    user = hostile_user("tags")
    tags = {"region": "eu", "who": 'CORP\\alice "🦀"'}

    async def scenario():
        async with inbox_for(node, user) as inbox:
            with Publisher(node.url, node.api_key, retry=FAST) as pub:
                await asyncio.to_thread(pub.publish, "orders", "order_update", {"n": 1}, users=[user], tags=tags)
            [push] = await inbox.wait_for(1, "order_update")
            assert push["tags"] == tags

    asyncio.run(scenario())
    # The node refuses what the client would have refused (sent raw, past the client's checks).
    message = Message("orders", "order_update", {}, users=[user])
    object.__setattr__(message, "tags", {"bad key": "x"})
    with Publisher(node.url, node.api_key) as pub:
        with pytest.raises(E.InvalidTagsError) as info:
            pub.send(message)
    assert info.value.status == 422 and "bad key" in info.value.message


def test_async_batch_over_1000_messages_is_split_and_delivered_in_order(node: Node):
    user = hostile_user("batch")
    batch = [Message("orders", "order_update", {"n": i}, users=[user]) for i in range(1200)]

    async def scenario():
        async with inbox_for(node, user) as inbox:
            async with AsyncPublisher(node.url, node.api_key, retry=FAST) as pub:
                results = await pub.publish_many(batch)
            assert all(isinstance(r, herald.PublishResult) for r in results), [r for r in results if not isinstance(r, herald.PublishResult)][:3]
            pushes = await inbox.wait_for(1200, "order_update", timeout=30)
            assert [p["data"]["n"] for p in pushes] == list(range(1200))
            assert [p["id"] for p in pushes] == [r.id for r in results]

    asyncio.run(scenario())


def test_republishing_the_same_message_delivers_once(node: Node):
    user = hostile_user("dup")
    message = Message("notifications", "notification", {"n": 1}, users=[user])

    async def scenario():
        async with inbox_for(node, user) as inbox:
            async with AsyncPublisher(node.url, node.api_key, retry=FAST) as pub:
                first = await pub.send(message)
                again = await pub.send(message)
            assert not first.duplicate and again.duplicate
            assert (again.id, again.offset) == (first.id, first.offset)
            await inbox.wait_for(1)
            assert len(await inbox.settle(1.0)) == 1

    asyncio.run(scenario())


class LossyProxy:
    """A TCP relay in front of the node that forwards each request but, for the first
    ``drop`` ones, throws the node's answer away and cuts the client off: the publish
    happened, the client cannot know, and must retry."""

    def __init__(self, target: str, drop: int) -> None:
        host, port = target.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.target = (host, int(port))
        self.drop = drop
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    @staticmethod
    def _read_message(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target) as upstream:
            pending = b""
            while True:
                got = self._read_message(client, pending)
                if got is None:
                    return
                request, pending = got
                self.requests += 1
                upstream.sendall(request)
                answer = self._read_message(upstream, b"")
                if answer is None:
                    return
                if self.requests <= self.drop:
                    return  # the node published; the client never hears of it
                client.sendall(answer[0])

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_retry_after_a_lost_answer_delivers_once(node: Node, flavour: str):
    user = hostile_user("retry")
    proxy = LossyProxy(node.url, drop=2)

    async def scenario():
        async with inbox_for(node, user) as inbox:
            args = ("notifications", "notification", {"title": "once"})
            if flavour == "sync":
                with Publisher(proxy.url, node.api_key, retry=FAST) as pub:
                    result = await asyncio.to_thread(pub.publish, *args, users=[user])
            else:
                async with AsyncPublisher(proxy.url, node.api_key, retry=FAST) as pub:
                    result = await pub.publish(*args, users=[user])
            assert proxy.requests == 3
            assert result.duplicate  # the third attempt was answered from the first one
            [push] = await inbox.wait_for(1)
            assert push["id"] == result.id
            assert len(await inbox.settle(1.0)) == 1

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()


def test_a_key_reused_for_another_message_is_refused(node: Node):
    key = f"CORP\\key-{uuid.uuid4()}"
    with Publisher(node.url, node.api_key) as pub:
        pub.publish("alerts", "alert", {"n": 1}, idempotency_key=key)
        with pytest.raises(E.IdempotencyKeyReusedError) as info:
            pub.publish("alerts", "alert", {"n": 2}, idempotency_key=key)
    assert info.value.status == 422 and info.value.code == "idempotency_key_reused"


@pytest.mark.parametrize(
    "call,cls",
    [
        (lambda p: p.publish("no-such-channel-🦀", "alert", {}), E.UnknownChannelError),
        (lambda p: p.publish("alerts", "notification", {}), E.TypeNotAllowedError),
        (lambda p: p.publish("notifications", "notification", {}), E.UsersRequiredError),
        (lambda p: p.publish("alerts", "alert", json.loads("{\"a\":" * 70 + "1" + "}" * 70)), E.DataTooDeepError),
        (lambda p: p.publish("notifications", "notification", {}, users=[str(i) for i in range(1001)]),
         E.TooManyUsersError),
    ],
)
def test_refusals_from_the_node_are_typed(node: Node, call, cls):
    with Publisher(node.url, node.api_key) as pub:
        with pytest.raises(cls) as info:
            call(pub)
    assert type(info.value) is cls and info.value.status in (404, 413, 422)


def test_a_wrong_api_key_is_unauthorized(node: Node):
    with Publisher(node.url, node.api_key + "-wrong") as pub:
        with pytest.raises(E.UnauthorizedError) as info:
            pub.publish("alerts", "alert", {})
    assert info.value.status == 401


def test_batch_item_refusals_come_back_in_place(node: Node):
    user = hostile_user("mixed")
    batch = [Message("orders", "order_update", {"n": 0}, users=[user]),
             Message("nope-🦀", "x", {}),
             Message("orders", "order_update", {"n": 2}, users=[user])]
    with Publisher(node.url, node.api_key) as pub:
        results = pub.publish_many(batch)
    assert isinstance(results[0], herald.PublishResult) and isinstance(results[2], herald.PublishResult)
    assert isinstance(results[1], E.UnknownChannelError) and results[1].status == 404


# The Django Channels layer against the node.


def django_layer(node: Node):
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS={})
        django.setup()
    from channels.layers import get_channel_layer
    from django.test import override_settings

    config = {
        "BACKEND": "herald.django.HeraldChannelLayer",
        "CONFIG": {
            "url": node.url,
            "api_key": node.api_key,
            "groups": {
                "user_{id}": {"users": "{id}", "channels": {"notification": "notifications", "order_update": "orders"}},
                "{name}": "{name}",
            },
            "types": {"order.notification": "notification"},
        },
    }
    with override_settings(CHANNEL_LAYERS={"default": config}):
        return get_channel_layer()


def test_django_group_send_reaches_herald_clients(node: Node):
    from asgiref.sync import async_to_sync

    user = hostile_user("django")
    other = hostile_user("other")
    layer = django_layer(node)
    group_send = async_to_sync(layer.group_send)  # what sync backend code (signal handlers) calls

    async def scenario():
        async with inbox_for(node, user) as inbox, inbox_for(node, other) as bystander:
            await asyncio.to_thread(group_send, f"user_{user}",
                                    {"type": "order.notification", "data": {"id": 9, "title": "PO \"9\""}})
            await asyncio.to_thread(group_send, f"user_{user}", {"type": "order_update", "data": {"order": 9}})
            await asyncio.to_thread(group_send, "alerts", {"type": "alert", "data": {"text": "all"}})
            await asyncio.to_thread(group_send, "materials", {"type": "material_update", "sku": "A-1"})
            pushes = await inbox.wait_for(4)
            got = sorted((p["channel"], p["type"], json.dumps(p["data"], sort_keys=True)) for p in pushes)
            assert got == sorted([
                ("notifications", "notification", json.dumps({"id": 9, "title": 'PO "9"'}, sort_keys=True)),
                ("orders", "order_update", json.dumps({"order": 9})),
                ("alerts", "alert", json.dumps({"text": "all"})),
                ("materials", "material_update", json.dumps({"sku": "A-1"})),
            ])
            seen = await bystander.wait_for(2)
            assert sorted(p["channel"] for p in seen) == ["alerts", "materials"]
            assert len(await bystander.settle(0.5)) == 2

        with pytest.raises(E.UnknownChannelError):
            await asyncio.to_thread(group_send, "dept_7", {"type": "x", "data": {}})

    asyncio.run(scenario())


LEGACY = Path(__file__).resolve().parents[4] / "e2e" / "peers" / "legacy"


def test_the_unchanged_legacy_view_pushes_to_herald_clients(node: Node):
    """e2e/peers/legacy's publish view (the legacy signal handlers' stand-in), switched to
    Herald by LEGACY_CHANNEL_LAYER=herald alone, reaches a user connected to Herald."""
    user = f"{uuid.uuid4().int % 10**9}"  # the legacy view only accepts ids valid in group names
    script = (
        "import django, json, sys; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().post('/api/push/', data=sys.argv[1], content_type='application/json',"
        " headers={'X-Api-Key': 'legacy-key'})\n"
        "print(r.status_code, r.content.decode())\n"
    )
    pushes = [{"user": user, "type": "notification", "data": {"title": "from legacy"}},
              {"user": int(user), "type": "order_update", "data": {"order": 1}},
              {"group": "alerts", "type": "alert", "data": {"text": "legacy alert"}}]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGACY_")}
    env.update(LEGACY_DJANGO_SECRET="s", LEGACY_JWT_SECRET="j", LEGACY_API_KEY="legacy-key",
               DJANGO_SETTINGS_MODULE="legacy_push.settings", LEGACY_CHANNEL_LAYER="herald")

    async def scenario():
        async with inbox_for(node, user) as inbox:
            out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script, json.dumps(pushes)],
                                          cwd=LEGACY, env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and out.stdout.startswith("200 "), (out.stdout, out.stderr)
            got = await inbox.wait_for(3)
            assert sorted((p["type"], p["data"].get("title") or p["data"].get("text") or p["data"]["order"])
                          for p in got) == [("alert", "legacy alert"), ("notification", "from legacy"),
                                            ("order_update", 1)]
            # The legacy envelope the front end reads is intact.
            assert all({"type", "data"} <= set(p) for p in got)

    asyncio.run(scenario())


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_examples_run(node: Node, capsys: pytest.CaptureFixture[str]):
    """Every Python example of the README that publishes runs as written against the node
    (only the address and API key are substituted)."""
    blocks = [b.split("\n", 1)[1] for b in README.read_text().split("```")[1::2] if b.startswith("python\n")]
    examples = [b for b in blocks if "Publisher(" in b]
    assert len(examples) >= 4
    for code in examples:
        code = code.replace("http://127.0.0.1:8080", node.url).replace("<api key>", node.api_key)
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "422 type_not_allowed" in out


def test_the_legacy_daphne_process_switched_by_settings_pushes_to_herald_clients(node: Node):
    """The legacy peer as it deploys (daphne serving legacy_push.asgi, from the venv its
    setup.sh builds), with LEGACY_CHANNEL_LAYER=herald: its HTTP publish endpoint reaches a
    user connected to Herald."""
    import re
    import time
    import urllib.request

    setup = subprocess.run([str(LEGACY / "setup.sh")], capture_output=True, text=True, timeout=900)
    assert setup.returncode == 0, setup.stderr
    venv = Path(setup.stdout.strip().splitlines()[-1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGACY_")}
    env.update(LEGACY_DJANGO_SECRET="s", LEGACY_JWT_SECRET="j", LEGACY_API_KEY="legacy-key",
               LEGACY_CHANNEL_LAYER="herald")
    daphne = subprocess.Popen([str(venv / "bin" / "daphne"), "-b", "127.0.0.1", "-p", "0", "legacy_push.asgi:application"],
                              cwd=LEGACY, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        assert daphne.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = daphne.stderr.readline()
            assert line, "daphne exited before listening"
            m = re.search(r"Listening on TCP address 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "daphne did not report its port"
        # Keep reading daphne's log so that a full pipe never stalls it.
        threading.Thread(target=daphne.stderr.read, daemon=True).start()
        user = str(uuid.uuid4().int % 10**9)

        def push(body: dict) -> tuple[int, bytes]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/push/", data=json.dumps(body).encode(),
                                         headers={"X-Api-Key": "legacy-key", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as reply:
                return reply.status, reply.read()

        async def scenario():
            async with inbox_for(node, user) as inbox:
                status, body = await asyncio.to_thread(
                    push, {"user": user, "type": "order_update", "data": {"order": "PO-1", "note": 'a "q" \\ b'}})
                assert status == 200 and json.loads(body) == {"sent": 1}
                [got] = await inbox.wait_for(1)
                assert (got["type"], got["channel"], got["data"]) == ("order_update", "orders",
                                                                      {"order": "PO-1", "note": 'a "q" \\ b'})

        asyncio.run(scenario())
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)
