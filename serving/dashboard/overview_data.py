"""Store-wide figures the pages share, cached per batch scoring (the cache key is the store's ``scored_at``).

``summary()`` scans the whole store; caching it per scoring keeps the customer list's filter options cheap
on 100k customers while a new batch scoring shows up at once.
"""

from __future__ import annotations

import threading
from typing import Any

from serving.actions import NO_ACTION
from serving.dashboard.queries import Choices
from serving.dashboard.value import store_value_terms
from serving.state import AppState

_lock = threading.Lock()


def store_meta(state: AppState) -> dict[str, Any]:
    return state.store.meta()


def cached_summary(holder: Any, state: AppState, meta: dict[str, Any]) -> dict[str, Any]:
    """The store's summary for the scoring described by ``meta`` (computed once per scoring), with the
    terms of its values (``value_terms``: basis and discount rate)."""
    key = (str(meta.get("scored_at")), str(meta.get("customers")), str(id(state.store)))
    cached: tuple[tuple[str, str, str], dict[str, Any]] | None = getattr(holder, "dashboard_summary", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    summary = state.store.summary()
    summary.setdefault("actions", [])
    summary["value_terms"] = store_value_terms(state.store)
    with _lock:
        holder.dashboard_summary = (key, summary)
    return summary


def action_labels(state: AppState) -> dict[str, str]:
    """Action id -> the playbook's label (ids no longer in the playbook keep their id)."""
    labels = {a.name: a.label for a in state.playbook.actions}
    labels[NO_ACTION] = "No action"
    return labels


def filter_choices(state: AppState, summary: dict[str, Any]) -> Choices:
    segments = tuple(sorted(str(s["segment"]) for s in summary.get("segments", []) if s.get("segment")))
    actions = list(action_labels(state))
    actions += [str(a["action_name"]) for a in summary.get("actions", []) if a["action_name"] not in actions]
    return Choices(segments=segments, actions=tuple(actions))
