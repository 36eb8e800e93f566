"""What the app holds while it runs: settings, the model holder, the store, the keys, the campaigns, the
playbook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.actions import Playbook
from serving.campaign_store import CampaignStore
from serving.keys import KeyStore
from serving.metrics import Metrics
from serving.model_source import ModelHolder
from serving.settings import ServingSettings
from serving.store import ScoreStore

if TYPE_CHECKING:
    from serving.api.score_batches import ScoreBatcher
    from serving.backends import AsyncReads
    from serving.dashboard.session import SharedSessions


@dataclass
class AppState:
    settings: ServingSettings
    models: ModelHolder
    store: ScoreStore
    keys: KeyStore
    campaigns: CampaignStore  # planned campaigns and reports, in the same store as the scores
    playbook: Playbook
    metrics: Metrics
    reads: AsyncReads | None = None  # the store's awaitable reads (hot API routes)
    sessions: SharedSessions | None = None  # dashboard session state of a server store (replicas)
    score_batcher: ScoreBatcher | None = None  # POST /v1/score's worker threads (made in the loop)
    logged_not_ready: str | None = None  # the last not-ready reason logged by /ready (logged once each)
