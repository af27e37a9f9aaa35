"""Entry file of recmf's MLflow model ("models from code": MLflow runs this file, no pickle).

See :mod:`recmf.serve.pyfunc`. Input: a table with a ``user_id`` column; params ``k`` (default 10)
and ``exclude_seen`` (default true).
"""

from __future__ import annotations

import warnings

import mlflow
from mlflow.pyfunc import PythonModel

from recmf.serve.pyfunc import RecmfModel

# MLflow's advice to add type hints: the signature is given explicitly when the model is logged
warnings.filterwarnings("ignore", message=".*type hints.*")


class RecmfPyfunc(PythonModel):
    def load_context(self, context) -> None:
        self.model = RecmfModel()
        self.model.load(context.artifacts["bundle"], context.model_config)

    def predict(self, context, model_input, params=None):
        params = params or {}
        if hasattr(model_input, "columns"):
            if "user_id" not in model_input.columns:
                raise ValueError(
                    f"the input needs a 'user_id' column; got columns {list(model_input.columns)}"
                )
            users = [str(u) for u in model_input["user_id"].tolist()]
        else:
            users = [str(u) for u in model_input]
        return self.model.predict(
            users, params.get("k", 10), bool(params.get("exclude_seen", True))
        )


mlflow.models.set_model(RecmfPyfunc())
