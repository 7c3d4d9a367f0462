"""The two publishers behind one blocking interface, so a unit test runs against both."""

from __future__ import annotations

import asyncio
from typing import Any

import fake_herald
from herald import AsyncPublisher, Publisher, RetryPolicy

FAST = RetryPolicy(max_retries=3, initial_backoff=0.001, max_backoff=0.004)


class SyncFacade:
    """The blocking publisher, as is."""

    def __init__(self, url: str, **options: Any) -> None:
        self.inner = Publisher(url, fake_herald.API_KEY, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AsyncFacade:
    """The asyncio publisher behind the same blocking calls, each run in a fresh event loop
    (as Django's async_to_sync does), so connection reuse across loops is exercised too."""

    def __init__(self, url: str, **options: Any) -> None:
        self.inner = AsyncPublisher(url, fake_herald.API_KEY, **options)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *a, **kw: asyncio.run(attr(*a, **kw))
