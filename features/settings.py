"""Settings read from the environment (prefix ``CHURNGUARD_``), each with a documented default.

Reach them through :func:`get_settings` so tests can override them (``get_settings.cache_clear()``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChurnguardSettings(BaseSettings):
    """Where things live and the defaults every command shares. Serving extends this class
    (``serving.settings.ServingSettings``): one prefix, one set of names, no second copy of ``home``.
    Training choices such as the horizon live in the training config (``training.config.TrainConfig``)."""

    model_config = SettingsConfigDict(env_prefix="CHURNGUARD_", extra="ignore")

    home: Path = Field(
        default=Path("models"),
        description="Folder for the embedded MLflow store, its artifacts, the serving store and API keys.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else a SQLite store in <home>/mlflow.db.",
    )
    model_name: str = Field(default="churnguard", description="Name of the registered MLflow model.")
    threads: int = Field(default=2, ge=1, le=256, description="Threads for LightGBM, DuckDB and SHAP.")
    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="Feature and batch-scoring engine: embedded DuckDB (one machine), or Apache Spark "
        "(the `spark` extra and Java 17) for data beyond one machine.",
    )
    spark_master: str = Field(
        default="local[2]",
        description="Spark master URL (local[N], yarn, spark://host:7077, k8s://...); ignored under "
        "spark-submit, which sets its own.",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Spark settings, as spark-defaults.conf gives them; in the environment as JSON, "
        'e.g. CHURNGUARD_SPARK_CONF=\'{"spark.executor.memory": "8g"}\'.',
    )
    spark_shuffle_partitions: int | None = Field(
        default=None,
        ge=1,
        description="spark.sql.shuffle.partitions (default: 4 per local core, Spark's own on a cluster).",
    )

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def resolved_tracking_uri(self) -> str:
        """The tracking URI in force: explicit setting, then MLFLOW_TRACKING_URI, then the embedded store."""
        import os

        if self.tracking_uri:
            return self.tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    def artifact_location(self) -> str:
        return (self.home / "artifacts").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> ChurnguardSettings:
    return ChurnguardSettings()
