"""Serving settings (prefix ``CHURNGUARD_``), each with a documented default; refused at start-up if unsafe."""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from features.errors import RenamedSettingWarning
from features.settings import ChurnguardSettings

# Compatibility: environment variables an earlier version named otherwise, old name -> field. The revenue
# forecast's limit was CHURNGUARD_DEGRADE_CLV_RATIO before clv meant lifetime value (issue #13).
RENAMED_ENV = {"CHURNGUARD_DEGRADE_CLV_RATIO": "degrade_revenue_ratio"}


class RenamedEnvSource(PydanticBaseSettingsSource):
    """The old names of :data:`RENAMED_ENV`, read below the current names (which win when both are set),
    each with a warning naming the current one.

    A source of its own rather than ``AliasChoices`` of the two full names: with aliases, pydantic-settings
    (2.16) hands the value on under the first alias whichever variable held it, so which one the user set is
    lost and could not be warned about, and a refused value is located at the alias instead of the field
    (which the CLI's settings message would prefix with ``CHURNGUARD_`` a second time)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the environment itself

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}  # names are case-insensitive, as the rest
        prefix = str(self.settings_cls.model_config.get("env_prefix", "")).upper()
        found: dict[str, Any] = {}
        for old, field_name in RENAMED_ENV.items():
            if old not in environ:
                continue
            new = f"{prefix}{field_name.upper()}"
            if field_name in self.current_state:
                message = f"{old} is ignored: it is the old name of {new}, which is set; unset {old}"
            else:
                message = f"{old} is the old name of {new}: it is read as {new} for now; rename it"
                found[field_name] = environ[old]
            warnings.warn(message, RenamedSettingWarning, stacklevel=1)
        return found


class ServingSettings(ChurnguardSettings):
    """The shared settings plus what the API, dashboard and batch scoring need (same ``CHURNGUARD_`` prefix)."""

    model_uri: str = Field(
        default="models:/churnguard@champion",
        description="Registry alias URI or a local model folder to serve.",
    )
    store_path: Path | None = Field(
        default=None, description="Serving store file (default <home>/scores.db)."
    )
    store_url: SecretStr | None = Field(
        default=None,
        description="A PostgreSQL serving store shared by several API processes or hosts "
        "(postgresql://user@host:5432/db); it also holds the API keys, dashboard sessions and campaigns. "
        "Unset: the embedded SQLite file (store_path) and the key file (keys_path).",
    )
    store_pool_size: int = Field(
        default=16, ge=1, le=200, description="Most connections one API process opens to a server store."
    )
    keys_path: Path | None = Field(default=None, description="API key hashes (default <home>/api_keys.json).")
    playbook: Path | None = Field(default=None, description="Retention playbook YAML (default: shipped one).")
    poll_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="How often to check the alias for a new champion (0 = never).",
    )
    batch_limit: int = Field(default=1000, ge=1, le=100_000, description="Most ids in one batch request.")
    max_body_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        le=100_000_000,
        description="Request bodies above this are refused with 413 before parsing.",
    )
    top_k: int = Field(default=5, ge=1, le=20, description="Reasons returned per customer.")
    score_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Worker threads scoring POST /v1/score requests at once in one API process (about one "
        "per core); further requests wait their turn without holding a thread.",
    )
    session_hours: float = Field(default=8.0, gt=0, le=168, description="Dashboard session lifetime.")
    cookie_secure: bool = Field(
        default=False,
        description="Always mark the session cookie Secure (it already is on https, including "
        "X-Forwarded-Proto: https from a proxy uvicorn trusts: FORWARDED_ALLOW_IPS).",
    )
    metrics_access: Literal["key", "public", "off"] = Field(
        default="key",
        description="GET /metrics: 'key' needs a bearer token (metrics_key or any API key), "
        "'public' is open (private networks only), 'off' answers 404.",
    )
    metrics_key: SecretStr | None = Field(
        default=None,
        description="A scrape-only bearer token for /metrics (it reads no customer data).",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve /docs and /redoc (their assets come from a public CDN); /openapi.json is always served.",
    )
    auth_failure_burst: int = Field(
        default=30,
        ge=0,
        le=10_000,
        description="Failed authentications a client may make at once before 429 (0 = no throttling).",
    )
    auth_failures_per_minute: float = Field(
        default=30.0, gt=0, le=100_000, description="How fast a client's failure allowance refills."
    )

    history_runs: int = Field(
        default=36,
        ge=2,
        le=10_000,
        description="Batch runs whose per-customer snapshot the store keeps (score history, realised "
        "performance once a run's horizon has passed); older runs are deleted.",
    )
    drift_psi_warn: float = Field(
        default=0.1, gt=0, le=10, description="PSI from which a column's drift is a warning."
    )
    drift_psi_alert: float = Field(
        default=0.2, gt=0, le=10, description="PSI from which a column's drift is an alert (retrain signal)."
    )
    drift_p_value: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="p-value below which the two-sample test (KS, chi-square) calls a shift significant "
        "(reported; the alert comes from the PSI).",
    )
    degrade_auc_drop: float = Field(
        default=0.05, gt=0, le=1, description="Realised ROC AUC this far below validation: degraded."
    )
    degrade_ece_rise: float = Field(
        default=0.05, gt=0, le=1, description="Realised ECE this far above validation: degraded."
    )
    degrade_revenue_ratio: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Realised total ratio of the revenue forecast over the horizon (predicted/actual spend) "
        "off 1 by more than this share: degraded.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources in their usual order, with the renamed variables just below the
        environment's current names."""
        renamed = RenamedEnvSource(settings_cls)
        return init_settings, env_settings, renamed, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _warn_below_alert(self) -> ServingSettings:
        if self.drift_psi_warn >= self.drift_psi_alert:
            raise ValueError(
                f"drift_psi_warn ({self.drift_psi_warn}) must be below drift_psi_alert ({self.drift_psi_alert})"
            )
        return self

    @field_validator("model_uri")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model_uri must not be empty")
        return value

    @field_validator("store_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "store_url must be a PostgreSQL URL (postgresql://user@host:5432/database); "
                "leave it unset for the embedded SQLite store"
            )
        return value

    @property
    def server_store_url(self) -> str | None:
        """The PostgreSQL store's URL when one is configured, else None (the SQLite default)."""
        return self.store_url.get_secret_value() if self.store_url else None

    @field_validator("metrics_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("metrics_key must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    @property
    def store_file(self) -> Path:
        """The serving store in force: ``store_path``, else ``<home>/scores.db``."""
        return self.store_path or self.home / "scores.db"

    @property
    def keys_file(self) -> Path:
        """The API key hashes in force: ``keys_path``, else ``<home>/api_keys.json``."""
        return self.keys_path or self.home / "api_keys.json"


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
