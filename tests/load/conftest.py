"""Fixtures of the load suite: the integration suite's real servers, on a private copy of the trained home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Trained
from tests.integration.servers import Servers, copy_home


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    pool = Servers(tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def api_home(trained: Trained, tmp_path: Path) -> Path:
    """This test's own copy of the trained home (registry, artifacts, serving store, API keys)."""
    return copy_home(trained.home, tmp_path / "home")
