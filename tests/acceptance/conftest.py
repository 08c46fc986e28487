"""Fixtures shared by the acceptance tests."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.helpers import free_port, running_server


@pytest.fixture
def fake_port() -> Iterator[int]:
    """A fake llama-server of this test's own: 2 slots, a 4k context, /metrics, 2 ms per token."""
    port = free_port()
    with running_server(port, "-c", "4096", "-np", "2", "--metrics", "--token-interval-ms", "2"):
        yield port
