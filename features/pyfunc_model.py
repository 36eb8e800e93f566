"""MLflow "model from code": the churnguard pyfunc, loading the bundle logged as its artifact.

MLflow executes this file when the model is loaded; it defines the class and registers one instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from features.bundle import ModelBundle


class ChurnguardModel(PythonModel):
    """predict(features) -> churn probability, horizon revenue, lifetime value, value at risk (see
    :meth:`ModelBundle.predict`) and, when the bundle carries learned action effects, the learned policy's
    action, expected net value and do-not-contact flag. ``bundle`` gives the rest (reasons)."""

    bundle: ModelBundle

    def load_context(self, context: Any) -> None:
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.bundle.predict(as_model_numbers(pd.DataFrame(model_input)))


def as_model_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Every numeric or boolean column as float64 (missing values as NaN), text left alone.

    The feature table keeps counts as integers (int64 from DuckDB, long from Spark, nullable Int64 from
    some readers), and ``spark_udf`` hands over whatever Spark holds; the model reads numbers as doubles.
    The signature leaves numeric inputs untyped so that MLflow does not refuse int64 ("Can not safely
    convert int64 to float64"); this cast makes every such input a double instead.
    """
    out = {}
    for name, column in frame.items():
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            out[name] = pd.Series(column.to_numpy(dtype="float64", na_value=np.nan), index=frame.index)
        else:
            out[name] = column
    return pd.DataFrame(out, index=frame.index)


set_model(ChurnguardModel())
