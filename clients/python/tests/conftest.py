"""Fixtures shared by the unit tests: the fake Herald and a way to run one test body
against both the blocking and the asyncio publisher."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fake_herald  # noqa: E402
from herald import AsyncPublisher, Publisher, RetryPolicy  # noqa: E402

FAST = RetryPolicy(max_retries=3, initial_backoff=0.001, max_backoff=0.004)


@pytest.fixture
def fake() -> Iterator[fake_herald.FakeHerald]:
    server = fake_herald.start()
    yield server
    fake_herald.stop(server)


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


@pytest.fixture(params=["sync", "async"])
def make_publisher(request: pytest.FixtureRequest, fake: fake_herald.FakeHerald) -> Iterator[Any]:
    made: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("retry", FAST)
        facade = (SyncFacade if request.param == "sync" else AsyncFacade)(options.pop("url", fake.url), **options)
        made.append(facade)
        return facade

    yield make
    for p in made:
        p.inner.close()
