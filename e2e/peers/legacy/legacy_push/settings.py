"""Settings of the legacy push peer: the Channels part of the legacy Django backend only.

No database, sessions, templates or admin: the legacy consumer authenticates from the JWT
alone, and the benchmark needs nothing else. Everything deployment-specific comes from the
environment (see asgi.py for the full list and the start command).
"""

import os


def _require(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} must be set")
    return value


SECRET_KEY = _require("LEGACY_DJANGO_SECRET")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "channels",
    "notifications",
]
MIDDLEWARE = []
ROOT_URLCONF = "legacy_push.urls"
ASGI_APPLICATION = "legacy_push.asgi.application"
DATABASES = {}
USE_TZ = True
TIME_ZONE = "UTC"

# HS256 secret shared with the issuer of the browsers' JWTs, and the key backend code uses to
# reach the publish endpoint.
JWT_SECRET = _require("LEGACY_JWT_SECRET")
PUSH_API_KEY = _require("LEGACY_API_KEY")

# The legacy channel layer: channels_redis against one standalone Redis. The legacy
# configuration only names the host, so the library defaults apply; they are spelled out
# here because they are what the benchmark measures. All consumers of one daphne process
# share one Redis queue, which holds at most `capacity` undelivered messages (one per
# group_send, carrying its local member list); once it is full, group_send drops the message
# for every member in that process and only logs "1 of N channels over capacity". Messages
# older than `expiry` seconds are discarded.
#
# `max_connections` and `socket_timeout` are not legacy settings but restore legacy behaviour
# under today's redis-py, whose defaults the legacy stack (channels_redis 2.4 on aioredis) did
# not have: a pool that fails commands beyond 100 connections (a burst of connecting browsers,
# three group_add calls each, got HTTP 500s) and a 5 s read timeout equal to channels_redis's
# 5 s BZPOPMIN, which under load kills consumers with "Timeout reading from" (the client is
# disconnected and loses its messages).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "host": os.environ.get("LEGACY_REDIS_HOST", "127.0.0.1"),
                    "port": int(os.environ.get("LEGACY_REDIS_PORT", "6379")),
                    "max_connections": 10_000,
                    "socket_timeout": None,
                }
            ],
            "capacity": int(os.environ.get("LEGACY_CHANNEL_CAPACITY", "100")),
            "expiry": 60,
            "group_expiry": 86400,
        },
    },
}

# The switch to Herald, by settings alone (views.py and the signal handlers it stands for are
# unchanged): LEGACY_CHANNEL_LAYER=herald replaces channels_redis with Herald's channel layer
# (clients/python, installed by setup.sh), which forwards every group_send to Herald's publish
# API at HERALD_URL with HERALD_API_KEY. Herald then serves the browsers' WebSockets; this
# process only publishes. Groups map to Herald channels: user_<id> to the channel of the message
# type for that user (Herald's per-user channels each carry one type), alerts to alerts, and
# group_<n> to the channel group_<n> (which Herald's channel file must define). A group or a
# type with no mapping raises herald.UnmappedGroupError instead of being dropped.
_LAYER = os.environ.get("LEGACY_CHANNEL_LAYER", "redis")
if _LAYER == "herald":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "herald.django.HeraldChannelLayer",
            "CONFIG": {
                "url": _require("HERALD_URL"),
                "api_key": _require("HERALD_API_KEY"),
                "groups": {
                    "user_{id}": {
                        "users": "{id}",
                        "channels": {"notification": "notifications", "order_update": "orders"},
                    },
                    "alerts": "alerts",
                    "group_{n}": "group_{n}",
                },
            },
        },
    }
elif _LAYER != "redis":
    raise RuntimeError(f"LEGACY_CHANNEL_LAYER must be redis or herald, not {_LAYER!r}")

# channels_redis's "N of M channels over capacity in group G" lines (logged at INFO) are the
# only trace of messages the layer dropped: send them to stderr. Everything else keeps
# daphne's logging (INFO, including "Listening on TCP address HOST:PORT").
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "channels_redis.core": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
