"""The legacy push service as a benchmark peer: Django Channels + channels_redis + daphne.

It reproduces the legacy WebSocket service described in the legacy documents, as that
service deploys: one daphne process serving both the browsers' WebSockets and the backend's
HTTP, with channels_redis as the channel layer on one standalone Redis.

- ``/ws/notifications/?token=<JWT>``: the JWT (HS256, ``user_id`` claim, ``exp`` required)
  is validated with PyJWT; a missing or invalid token closes the handshake (daphne answers
  403). An accepted connection is in the groups ``user_<user_id>`` and ``alerts``, and in
  ``group_<n>`` when the token has a ``group`` claim (the legacy per-department group).
  Pushes arrive as ``{"type": ..., "data": {...}}``; ``ping`` is answered with ``pong``,
  ``subscribe`` with ``subscription_success``, anything else with
  ``{"type": "error", "message": ...}``.
- ``POST /api/push/`` with header ``X-Api-Key``: publishes exactly as the legacy backend's
  signal handlers and tasks do, with ``channel_layer.group_send`` (see
  notifications/views.py for the body).

Start (after ``setup.sh``, from this directory)::

    LEGACY_DJANGO_SECRET=... LEGACY_JWT_SECRET=... LEGACY_API_KEY=... \\
    LEGACY_REDIS_HOST=127.0.0.1 LEGACY_REDIS_PORT=6379 \\
    $HOME/.cache/herald/legacy-venv/bin/daphne -b 127.0.0.1 -p 8000 legacy_push.asgi:application

``-p 0`` picks a free port; daphne logs ``Listening on TCP address 127.0.0.1:PORT``.
``LEGACY_CHANNEL_CAPACITY`` overrides the layer's per-channel capacity (legacy: 100).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "legacy_push.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models or settings-dependent code.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from notifications.auth import JwtQueryAuthMiddleware  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": JwtQueryAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
