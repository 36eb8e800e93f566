"""MLflow "model from code": the churnguard pyfunc, loading the bundle logged as its artifact.

MLflow executes this file when the model is loaded; it defines the class and registers one instance.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from features.bundle import ModelBundle


class ChurnguardModel(PythonModel):
    """predict(features) -> churn_probability, clv, value_at_risk. ``bundle`` gives the rest (reasons)."""

    bundle: ModelBundle

    def load_context(self, context: Any) -> None:
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.bundle.predict(pd.DataFrame(model_input))


set_model(ChurnguardModel())
