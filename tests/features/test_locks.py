"""The registry lock for a PostgreSQL tracking store, against the real server: one holder at a time."""

from __future__ import annotations

import threading
import time

import pytest

from features.errors import ConfigError
from features.locks import advisory_lock, is_postgres_uri
from tests.pg import fresh_database


def test_only_postgres_uris_take_an_advisory_lock() -> None:
    assert is_postgres_uri("postgresql+psycopg2://u@h/db") and is_postgres_uri("postgresql://h/db")
    assert not is_postgres_uri("sqlite:///tmp/mlflow.db") and not is_postgres_uri("http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match="PostgreSQL"), advisory_lock("sqlite:///x.db"):
        pass


def test_a_second_holder_waits_and_gives_up_with_a_clear_error() -> None:
    with fresh_database() as url:
        uri = url.replace("postgresql://", "postgresql+psycopg2://", 1)  # as MLflow URIs may be written
        order: list[str] = []
        held = threading.Event()

        def first() -> None:
            with advisory_lock(uri, "test.lock"):
                held.set()
                order.append("first in")
                time.sleep(0.5)
                order.append("first out")

        thread = threading.Thread(target=first)
        thread.start()
        held.wait(10)
        with advisory_lock(url, "test.lock"):
            order.append("second in")
        thread.join()
        assert order == ["first in", "first out", "second in"]
        with (
            advisory_lock(url, "test.lock"),
            pytest.raises(ConfigError, match="held the registry lock"),
            advisory_lock(url, "test.lock", timeout=0.2),
        ):
            pass
