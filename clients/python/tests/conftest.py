"""Fixtures shared by the unit tests: the fake Herald and a way to run one test body
against both the blocking and the asyncio publisher."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fake_herald  # noqa: E402
from publishers import FAST, AsyncFacade, SyncFacade  # noqa: E402


@pytest.fixture
def fake() -> Iterator[fake_herald.FakeHerald]:
    server = fake_herald.start()
    yield server
    fake_herald.stop(server)


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
