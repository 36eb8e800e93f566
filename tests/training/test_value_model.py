"""The value model travels inside the trained bundle; older bundles still load without one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from features.bundle import BUNDLE_FORMAT, ModelBundle
from features.model_store import connect, load_model
from features.settings import get_settings


def test_trained_bundle_carries_the_value_model_and_an_older_one_loads(trained, tmp_path: Path) -> None:
    connect(get_settings())
    bundle: ModelBundle = load_model("models:/churnguard@champion").bundle
    assert bundle.value_model is not None and bundle.value_model.basis == "revenue"
    assert "spend" in bundle.value_model.method
    frame = pd_frame()
    scored = bundle.predict(frame)
    assert {"expected_revenue_90d", "residual_value", "value_1y", "p_alive", "value_at_risk"} <= set(scored)
    assert scored["residual_value"].iloc[0] > scored["value_1y"].iloc[0] > 0
    assert np.isnan(scored["residual_value"].iloc[1])  # no tenure or spend: unavailable, not 0

    bundle.save(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "bundle.json").read_text())["format"] == BUNDLE_FORMAT >= 3
    spec = json.loads((tmp_path / "new" / "bundle.json").read_text())
    spec["format"], spec["clv_scale"] = 2, spec.pop("revenue_scale")  # format 2 named them clv
    del spec["value_model"]
    (tmp_path / "new" / "revenue_model.txt").rename(tmp_path / "new" / "clv_model.txt")
    (tmp_path / "new" / "bundle.json").write_text(json.dumps(spec))
    old = ModelBundle.load(tmp_path / "new")
    assert old.value_model is None
    assert old.predict(frame)["residual_value"].isna().all()


def pd_frame():
    import pandas as pd

    return pd.DataFrame(
        {
            "orders_total": [6.0, 2.0],
            "tenure_days": [400.0, None],
            "recency_days": [12.0, 50.0],
            "spend_total": [420.0, None],
        }
    )
