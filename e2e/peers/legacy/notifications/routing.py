"""WebSocket routes, as in the legacy service: one endpoint for every browser."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/notifications/", consumers.NotificationConsumer.as_asgi()),
]
