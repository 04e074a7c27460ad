"""lit_tf: pretraining and fine-tuning Transformer language models with Lightning, Hydra and MLflow."""

__version__ = "0.1.0"
