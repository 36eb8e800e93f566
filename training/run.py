"""What one training run carries from step to step: its configuration, settings, data and timings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from features.settings import ChurnguardSettings
from training.config import TrainConfig


class Stopwatch:
    """Seconds per named step: ``with watch("features"): ...`` records how long the block took.

    A step that raises is still timed (the exception propagates); a step timed twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - began
            self.seconds[step] = round(self.seconds.get(step, 0.0) + elapsed, 2)


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """The run's fixed facts, known before any model is fitted."""

    cfg: TrainConfig
    settings: ChurnguardSettings
    fingerprint: dict[str, Any]  # Dataset.fingerprint(): files, hashes, rows, dates
    cutoffs: dict[str, Any]  # {"train": [...], "validation": "..."} as ISO dates
    watch: Stopwatch = field(default_factory=Stopwatch)
    trained_at: str = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0).isoformat())

    @property
    def timings(self) -> dict[str, float]:
        return self.watch.seconds
