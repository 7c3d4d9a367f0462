"""Fixtures for the integration tests, which run against a real herald-node.

They read HERALD_URL, HERALD_API_KEY and HERALD_JWT_SECRET (the node's HS256 secret, to
mint user tokens) and fail, not skip, when any is missing: selecting them (``-m
integration``) without a node is a broken run, not a pass. ``run-tests.sh --integration``
starts a node and sets them.
"""

from __future__ import annotations

import os

import pytest

from nodekit import Node


@pytest.fixture(scope="session")
def node() -> Node:
    missing = [name for name in ("HERALD_URL", "HERALD_API_KEY", "HERALD_JWT_SECRET") if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"integration tests need a running herald-node: set {', '.join(missing)} "
            "(or run ./run-tests.sh --integration, which starts one)",
            pytrace=False,
        )
    return Node(os.environ["HERALD_URL"], os.environ["HERALD_API_KEY"], os.environ["HERALD_JWT_SECRET"])
