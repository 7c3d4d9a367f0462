"""HeraldChannelLayer under Django: configured through CHANNEL_LAYERS only, reached through
channels' get_channel_layer() and async_to_sync, as backend code does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import django
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings

import fake_herald
from herald import UnknownChannelError, UnmappedGroupError, UnsupportedOperationError

if not settings.configured:
    settings.configure(INSTALLED_APPS=["channels"], CHANNEL_LAYERS={})
    django.setup()

from channels.layers import get_channel_layer  # noqa: E402
from django.test import override_settings  # noqa: E402

GROUPS = {
    "user_{id}": {"users": "{id}", "channels": {"notification": "notifications", "order_update": "orders"}},
    "dept_{id}": "dept_{id}",
    "{name}": "{name}",
}


@pytest.fixture
def layer(fake):
    config = {
        "BACKEND": "herald.django.HeraldChannelLayer",
        "CONFIG": {"url": fake.url, "api_key": fake_herald.API_KEY, "groups": GROUPS,
                   "types": {"order.notification": "notification"}, "max_retries": 2,
                   "initial_backoff": 0.001, "max_backoff": 0.002},
    }
    with override_settings(CHANNEL_LAYERS={"default": config}):
        yield get_channel_layer()


def test_group_send_through_async_to_sync_publishes_to_herald(layer, fake):
    send = async_to_sync(layer.group_send)
    send("user_CORP\\alice", {"type": "order.notification", "data": {"id": 1, "title": 'say "hi" 🦀'}})
    send("dept_7", {"type": "dept.news", "data": {"text": "x"}})
    send("materials", {"type": "material_update", "sku": "A-1", "stock": 3})
    bodies = [r.body for r in fake.requests]
    for b in bodies:
        b.pop("idempotency_key")
    assert bodies == [
        {"channel": "notifications", "type": "notification", "users": ["CORP\\alice"],
         "data": {"id": 1, "title": 'say "hi" 🦀'}},
        {"channel": "dept_7", "type": "dept_news", "data": {"text": "x"}},
        {"channel": "materials", "type": "material_update", "data": {"sku": "A-1", "stock": 3}},
    ]
    # Each async_to_sync call runs in a new event loop; the pooled connection still serves them.
    assert len({r.client_port for r in fake.requests}) == 1


def test_group_send_from_async_code(layer, fake):
    async def backend():
        await layer.group_send("user_42", {"type": "order_update", "data": {"order": 5}})
        await asyncio.gather(*(layer.group_send(f"user_{i}", {"type": "notification", "data": {}}) for i in range(5)))

    asyncio.run(backend())
    assert [r.body["channel"] for r in fake.requests] == ["orders"] + ["notifications"] * 5
    assert sorted(r.body["users"][0] for r in fake.requests[1:]) == [str(i) for i in range(5)]


def test_a_type_with_no_channel_for_a_user_group_raises_naming_the_group(layer, fake):
    with pytest.raises(UnmappedGroupError) as info:
        async_to_sync(layer.group_send)("user_42", {"type": "alert", "data": {}})
    assert info.value.group == "user_42" and "'user_42'" in str(info.value)
    assert fake.requests == []


def test_an_unmapped_group_raises_naming_it(fake):
    config = {"BACKEND": "herald.django.HeraldChannelLayer",
              "CONFIG": {"url": fake.url, "api_key": "k", "groups": {"user_{id}": {"users": "{id}", "channel": "n"}}}}
    with override_settings(CHANNEL_LAYERS={"default": config}):
        layer = get_channel_layer()
        with pytest.raises(UnmappedGroupError) as info:
            async_to_sync(layer.group_send)("group_7", {"type": "notification", "data": {}})
    assert info.value.group == "group_7" and "'group_7'" in str(info.value)
    assert fake.requests == []


def test_data_json_cannot_carry_raises_naming_the_group(layer, fake):
    from herald import InvalidMessageError

    with pytest.raises(InvalidMessageError) as info:
        async_to_sync(layer.group_send)("user_CORP\\bob", {"type": "notification", "data": {"when": object()}})
    assert "'user_CORP\\\\bob'" in str(info.value) and "not JSON-serialisable" in str(info.value)
    assert fake.requests == []


def test_herald_refusals_reach_the_caller(layer, fake):
    fake.script.append(404)
    with pytest.raises(UnknownChannelError):
        async_to_sync(layer.group_send)("nowhere", {"type": "x", "data": {}})


@pytest.mark.parametrize(
    "call",
    [
        lambda layer: layer.receive("specific.abc!x"),
        lambda layer: layer.new_channel(),
        lambda layer: layer.send("specific.abc!x", {"type": "x"}),
        lambda layer: layer.group_add("user_42", "specific.abc!x"),
        lambda layer: layer.group_discard("user_42", "specific.abc!x"),
    ],
)
def test_socket_side_methods_say_herald_serves_the_sockets(layer, call):
    with pytest.raises(UnsupportedOperationError) as info:
        asyncio.run(call(layer))
    assert "Herald serves the WebSockets now" in str(info.value)
    assert isinstance(info.value, NotImplementedError)


def test_flush_is_harmless(layer):
    async_to_sync(layer.flush)()


def test_a_bad_config_fails_when_the_layer_is_made(fake):
    config = {"BACKEND": "herald.django.HeraldChannelLayer",
              "CONFIG": {"url": fake.url, "api_key": "k", "groups": {"user_{id}": "c_{uid}"}}}
    from herald import ConfigurationError

    with override_settings(CHANNEL_LAYERS={"default": config}):
        with pytest.raises(ConfigurationError):
            get_channel_layer()


LEGACY = Path(__file__).resolve().parents[3] / "e2e" / "peers" / "legacy"

# Runs the unchanged legacy publish view (views.py) through Django's test client, in a
# process of its own because it needs the legacy settings module.
LEGACY_SCRIPT = r"""
import json, sys
import django
django.setup()
from django.conf import settings
from django.test import Client
print(json.dumps({"backend": settings.CHANNEL_LAYERS["default"]["BACKEND"]}))
if settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("herald"):
    client = Client()
    pushes = json.loads(sys.argv[1])
    reply = client.post("/api/push/", data=json.dumps(pushes), content_type="application/json",
                        headers={"X-Api-Key": "legacy-key"})
    print(json.dumps({"status": reply.status_code, "body": reply.json()}))
    try:
        client.post("/api/push/", data=json.dumps({"user": "42", "type": "alert", "data": {}}),
                    content_type="application/json", headers={"X-Api-Key": "legacy-key"})
    except Exception as e:
        print(json.dumps({"raised": type(e).__name__, "text": str(e)}))
"""


def run_legacy(env_extra: dict[str, str], pushes: list) -> list[dict]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("LEGACY_", "HERALD_"))}
    env = {**inherited, "LEGACY_DJANGO_SECRET": "s", "LEGACY_JWT_SECRET": "j", "LEGACY_API_KEY": "legacy-key",
           "DJANGO_SETTINGS_MODULE": "legacy_push.settings", **env_extra}
    out = subprocess.run([sys.executable, "-c", LEGACY_SCRIPT, json.dumps(pushes)], cwd=LEGACY, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_legacy_app_keeps_channels_redis_by_default():
    pytest.importorskip("channels_redis", reason="channels_redis is only in the legacy venv")
    [info] = run_legacy({}, [])
    assert info["backend"] == "channels_redis.core.RedisChannelLayer"


def test_legacy_app_switches_to_herald_by_settings_only(fake):
    pushes = [{"user": "42", "type": "notification", "data": {"title": "t"}},
              {"user": 7, "type": "order_update", "data": {"order": 1}},
              {"group": "alerts", "type": "alert", "data": {"text": "a"}},
              {"group": "group_3", "type": "material_update", "data": {"sku": "x"}}]
    lines = run_legacy({"LEGACY_CHANNEL_LAYER": "herald", "HERALD_URL": fake.url,
                        "HERALD_API_KEY": fake_herald.API_KEY}, pushes)
    assert lines[0] == {"backend": "herald.django.HeraldChannelLayer"}
    assert lines[1] == {"status": 200, "body": {"sent": 4}}
    assert lines[2]["raised"] == "UnmappedGroupError" and "'user_42'" in lines[2]["text"]
    got = [(r.body["channel"], r.body["type"], r.body.get("users"), r.body["data"]) for r in fake.requests]
    assert got == [("notifications", "notification", ["42"], {"title": "t"}),
                   ("orders", "order_update", ["7"], {"order": 1}),
                   ("alerts", "alert", None, {"text": "a"}),
                   ("group_3", "material_update", None, {"sku": "x"})]
    # The legacy code is untouched: the switch is in settings.py only.
    views = (LEGACY / "notifications" / "views.py").read_text()
    assert "herald" not in views.lower()
