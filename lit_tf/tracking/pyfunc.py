"""The best fine-tuned model as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame with a `text` column (sentence pairs as "a ||| b"), or a list of strings.
Output: a DataFrame with `prediction` (`label:prob` top labels, or `word/TAG ...` for NER).
"""

from __future__ import annotations

import mlflow
import mlflow.pyfunc


class LitTfClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from lit_tf.lit.checkpoint import load_checkpoint

        self.loaded = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from lit_tf.lit.predict import predict_lines

        lines = model_input["text"].tolist() if hasattr(model_input, "columns") else list(model_input)
        top = int((params or {}).get("top", 1))
        return pd.DataFrame({"text": lines, "prediction": predict_lines(self.loaded, lines, top=top)})


def log_classifier(tracking_uri: str, run_id: str, checkpoint: str) -> str:
    """Log `checkpoint` as the run's pyfunc model under `model`; returns its model URI."""
    from lit_tf import __version__

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LitTfClassifier(), artifacts={"checkpoint": checkpoint},
            pip_requirements=[f"lit_tf=={__version__}"],
        )
    return info.model_uri
