"""A Django Channels layer that forwards ``group_send`` to Herald.

Backend code keeps calling ``channel_layer.group_send(group, {"type": ..., "data": ...})``
(or ``async_to_sync`` of it); only ``CHANNEL_LAYERS`` changes::

    CHANNEL_LAYERS = {"default": {
        "BACKEND": "herald.django.HeraldChannelLayer",
        "CONFIG": {
            "url": "https://herald.example.com",
            "api_key": os.environ["HERALD_API_KEY"],
            "groups": {
                "user_{id}": {"users": "{id}",
                              "channels": {"notification": "notifications", "order_update": "orders"}},
                "{name}": "{name}",
            },
        },
    }}

Herald now serves the browsers' WebSockets, so the methods a socket-serving consumer uses
(``receive``, ``new_channel``, ``send``, ``group_add``, ``group_discard``) raise
:class:`~herald.errors.UnsupportedOperationError` saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from channels.layers import BaseChannelLayer

from ._core import RetryPolicy
from .aio import AsyncPublisher
from .errors import InvalidMessageError, UnsupportedOperationError
from .groups import GroupMap, RuleSpec

__all__ = ["HeraldChannelLayer"]


def _unsupported(method: str) -> NoReturn:
    raise UnsupportedOperationError(
        f"HeraldChannelLayer.{method}() is not available: Herald serves the WebSockets now, "
        "so no Django consumer receives from this layer. Browsers connect to Herald; backend "
        "code publishes with group_send(), which this layer forwards to Herald's publish API."
    )


class HeraldChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """Channel layer whose ``group_send`` publishes to Herald (see the module doc for
    ``CONFIG``). ``groups`` and ``types`` are described in :mod:`herald.groups`;
    ``timeout``, ``max_retries``, ``initial_backoff`` and ``max_backoff`` tune the
    publisher (:class:`herald.AsyncPublisher`)."""

    extensions = ["groups"]

    def __init__(
        self,
        url: str,
        api_key: str,
        groups: Mapping[str, RuleSpec],
        types: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        max_retries: int = 4,
        initial_backoff: float = 0.2,
        max_backoff: float = 10.0,
        expiry: int = 60,
        capacity: int = 100,
        channel_capacity: Any = None,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.mapping = GroupMap(groups, types)
        self.publisher = AsyncPublisher(
            url,
            api_key,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries, initial_backoff=initial_backoff, max_backoff=max_backoff),
        )

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Publishes ``message`` to the Herald channel (and users) ``group`` maps to.

        Raises :class:`~herald.errors.UnmappedGroupError` when no mapping applies,
        :class:`~herald.errors.InvalidMessageError` for a message Herald cannot carry, and
        the :class:`~herald.errors.APIError` subclass of Herald's refusal."""
        herald_message = self.mapping.resolve(group, message)
        try:
            herald_message.encode()
        except InvalidMessageError as e:
            raise InvalidMessageError(f"group_send to {group!r}: {e.message}", code=e.code) from None
        await self.publisher.send(herald_message)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        _unsupported("send")

    async def receive(self, channel: str) -> dict[str, Any]:
        _unsupported("receive")

    async def new_channel(self, prefix: str = "specific.") -> str:
        _unsupported("new_channel")

    async def group_add(self, group: str, channel: str) -> None:
        _unsupported("group_add")

    async def group_discard(self, group: str, channel: str) -> None:
        _unsupported("group_discard")

    async def flush(self) -> None:
        """Closes the pooled HTTP connections (there is no queue to empty)."""
        self.publisher.close()

    async def close(self) -> None:
        self.publisher.close()
