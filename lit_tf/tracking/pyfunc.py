"""The best fine-tuned model as an MLflow pyfunc model: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame with a `text` column (sentence pairs as "a ||| b"), or a list of strings.
Output: a DataFrame with `prediction` (`label:prob` top labels, or `word/TAG ...` for NER).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def signature():
    """What the pyfunc model takes and returns (and its `top` parameter)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                          outputs=Schema([ColSpec("string", "text"), ColSpec("string", "prediction")]),
                          params=ParamSchema([ParamSpec("top", "long", 1)]))


def log_classifier(tracking_uri: str, run_id: str, checkpoint: str, *, name: str = "model",
                   examples: Sequence[str] = (), register_as: str | None = None, step: int = 0) -> str:
    """Log `checkpoint` as the run's pyfunc model named `name` (MLflow 3: a logged model of the
    experiment, listed in its Models tab with the metrics the run holds when it is logged, so log
    the test metrics first), with a signature and `examples` as its input example; with
    `register_as`, also a new version of that registered model. Returns the model URI."""
    import pandas as pd

    from lit_tf import __version__

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=name, python_model=LitTfClassifier(), artifacts={"checkpoint": checkpoint},
            pip_requirements=[f"lit_tf=={__version__}"], signature=signature(),
            input_example=pd.DataFrame({"text": list(examples)}) if examples else None,
            registered_model_name=register_as, step=step,
        )
    return info.model_uri
