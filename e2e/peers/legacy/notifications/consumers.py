"""The legacy notification consumer: one per browser WebSocket.

On connect it joins the user's personal group, ``alerts`` and (when the token names one) the
user's shared group, so backend code reaches it only through ``channel_layer.group_send``.
Every push handler forwards the event as the legacy envelope ``{"type", "data"}``.
"""

import json

from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from .groups import ALERTS, shared_group, user_group


class NotificationConsumer(AsyncWebsocketConsumer):
    """Legacy ``/ws/notifications/`` consumer."""

    async def connect(self):
        claims = self.scope.get("jwt_claims")
        personal = user_group(claims["user_id"]) if claims else None
        if personal is None:
            # Closing before accept makes daphne refuse the handshake (HTTP 403).
            await self.close()
            return
        self.joined = [personal, ALERTS]
        if "group" in claims:
            shared = shared_group(claims["group"])
            if shared is None:
                await self.close()
                return
            self.joined.append(shared)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            await self.send_error("Binary messages are not supported")
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self.send_error("Invalid JSON")
            return
        if not isinstance(message, dict):
            await self.send_error("Message must be a JSON object")
            return
        kind = message.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong", "timestamp": timezone.now().isoformat()})
        elif kind == "subscribe":
            channels = message.get("channels", [])
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                await self.send_error("channels must be a list of strings")
                return
            # As in the legacy service, every user already receives every stream its groups
            # carry; subscribing only acknowledges.
            await self.send_json({"type": "subscription_success", "channels": channels})
        else:
            await self.send_error(f"Unknown message type: {kind}")

    async def send_json(self, content):
        await self.send(text_data=json.dumps(content))

    async def send_error(self, text):
        await self.send_json({"type": "error", "message": text})

    async def forward(self, event):
        await self.send_json({"type": event["type"], "data": event["data"]})

    # group_send dispatches on the event's "type": one handler per legacy message type.
    notification = forward
    alert = forward
    order_update = forward
    material_update = forward
