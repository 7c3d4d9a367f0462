"""The publish endpoint: what the legacy backend's signal handlers and tasks do, over HTTP.

``POST /api/push/`` with header ``X-Api-Key: <key>`` and a JSON body that is one push or a
list of them (a batch, sent in order)::

    {"user": "42", "type": "notification", "data": {...}}   -> group user_42
    {"group": "alerts", "type": "alert", "data": {...}}     -> every connected user
    {"group": "group_7", "type": "order_update", "data": {...}}

``type`` is one of notification, alert, order_update, material_update. Each push is one
``await channel_layer.group_send(group, {"type": type, "data": data})``, exactly the legacy
call; like it, the endpoint cannot tell whether a member's channel was full and the message
dropped. The view is async so the call costs no thread hop (a sync view would need
``async_to_sync``): the peer is given the cheapest publishing path the stack offers.

Replies: 200 ``{"sent": N}``; 400 ``{"error": ...}`` (nothing sent) for a malformed body;
401 for a wrong key; 405 for other methods.
"""

import json

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import JsonResponse
from django.utils.crypto import constant_time_compare

from .groups import PUSH_TYPES, is_publishable, user_group


def _resolve(item):
    """(group, event) for one push, or raises ValueError saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("a push must be a JSON object")
    kind, data = item.get("type"), item.get("data")
    if kind not in PUSH_TYPES:
        raise ValueError(f"type must be one of {', '.join(PUSH_TYPES)}")
    if not isinstance(data, dict):
        raise ValueError("data must be an object")
    if ("user" in item) == ("group" in item):
        raise ValueError("exactly one of user and group is required")
    if "user" in item:
        user = item["user"]
        group = user_group(user) if isinstance(user, (str, int)) and not isinstance(user, bool) else None
        if group is None:
            raise ValueError("user must be a valid user id")
    else:
        group = item["group"]
        if not isinstance(group, str) or not is_publishable(group):
            raise ValueError("group must be alerts or group_<n>")
    return group, {"type": kind, "data": data}


async def push(request):
    """Publishes one push or a batch through the channel layer."""
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    key = request.headers.get("X-Api-Key", "")
    if not constant_time_compare(key, settings.PUSH_API_KEY):
        return JsonResponse({"error": "invalid API key"}, status=401)
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "body must be JSON"}, status=400)
    items = body if isinstance(body, list) else [body]
    if not items:
        return JsonResponse({"error": "empty batch"}, status=400)
    try:
        pushes = [_resolve(item) for item in items]
    except ValueError as e:
        return JsonResponse({"error": str(e)}, status=400)
    layer = get_channel_layer()
    for group, event in pushes:
        await layer.group_send(group, event)
    return JsonResponse({"sent": len(pushes)})
