"""The one Spark session of a test run (local[2], UTC), or a skip that says what is missing."""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from typing import Any

import pytest


def spark_backend() -> Any:
    """An Ibis backend on the process's Spark session; skips (with the reason) without pyspark or Java."""
    if find_spec("pyspark") is None:
        pytest.skip("Spark tests need pyspark: pip install -e '.[dev,spark]' (make install-dev does)")
    if shutil.which("java") is None:
        pytest.skip("Spark tests need Java 17: install openjdk-17-jre-headless (no `java` on PATH)")
    from features.engine.spark import SparkConfig, connect, spark_session

    return connect(spark_session(SparkConfig("local[2]", shuffle_partitions=4)))
