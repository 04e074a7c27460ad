"""ELECTRA <-> HF ``ElectraModel`` / ``ElectraForPreTraining`` / ``ElectraFor{Sequence,Token}Classification``:
key rules and config maps.

HF's encoder is BERT's layout with embeddings of their own width (``embedding_size``) and, when it
differs from ``hidden_size``, an ``embeddings_project`` Linear: the embedding and layer rules are
BERT's (``hf.bert.embedding_rules`` / ``layer_rules``).

HF's ``ElectraForPreTraining`` is the discriminator alone (``electra.*`` + ``discriminator_predictions``,
whose activation is ``hidden_act``, as ours). Export of our pre-training model writes the discriminator
and leaves the generator out (``not_exported``); import of an HF ``ElectraForPreTraining`` into our
"pretraining" task loads the discriminator and leaves the generator (no rules here) at our init.
HF's ``ElectraClassificationHead`` hard-codes the exact GELU, and so does ours: every ELECTRA config
exports exactly. Import refuses what our encoder cannot represent: a ``hidden_act`` other than the
GELUs, relative position embeddings, decoders (cross-attention).
"""

from __future__ import annotations

from typing import Any

from lit_tf.models.electra import ElectraConfig, _scaled
from lit_tf.models.hf import bert as hf_bert
from lit_tf.models.hf.bert import embedding_rules, layer_rules
from lit_tf.models.hf.core import Arch, Groups, HFMapping, module


def rules(task: str, cfg: ElectraConfig, hf_base: str) -> Groups:
    """Rules of our ELECTRA model for ``task`` against a checkpoint whose encoder keys start with
    ``hf_base``. The generator of our pre-training model has none (HF's ElectraForPreTraining lacks it)."""
    o = "" if task == "encoder" else "electra."  # our encoder prefix
    enc = embedding_rules(hf_base, o)
    if cfg.embedding_size != cfg.d_model:
        enc += module(f"{hf_base}embeddings_project", f"{o}embeddings_project")
    groups: Groups = {"encoder": enc + layer_rules(hf_base, o, cfg.n_layers)}
    if task == "pretraining":
        groups["discriminator"] = [
            *module("discriminator_predictions.dense", "discriminator_head.dense"),
            *module("discriminator_predictions.dense_prediction", "discriminator_head.dense_prediction"),
        ]
    if task == "seq_cls":
        groups["seq_cls"] = [*module("classifier.dense", "classifier.dense"),
                             *module("classifier.out_proj", "classifier.out_proj")]
    if task == "token_cls":
        groups["token_cls"] = module("classifier", "classifier")
    return groups


def config_to_hf(cfg: ElectraConfig) -> dict[str, Any]:
    """HF ElectraConfig keys of the discriminator: BERT's plus the embedding width (the generator's
    sizes have no HF key)."""
    return {**hf_bert.config_to_hf(cfg), "embedding_size": cfg.embedding_size}


def _generator_size(d_model: int, n_heads: int) -> float:
    """Our default generator_size when it gives a valid generator for these sizes, else 1.0 (a
    full-width generator; HF configs carry no generator size, and only our "pretraining" task builds
    one, at our init)."""
    default = ElectraConfig.__dataclass_fields__["generator_size"].default
    d, h = _scaled(d_model, default), max(1, round(n_heads * default))
    return default if d >= 1 and d % h == 0 else 1.0


def config_from_hf(d: dict[str, Any], arch: str) -> ElectraConfig:
    fields = hf_bert.encoder_fields(d, arch)
    return ElectraConfig(**fields, embedding_size=d.get("embedding_size", 128),  # HF's default
                         generator_size=_generator_size(fields["d_model"], fields["n_heads"]))


MAPPING = HFMapping(
    config_class="ElectraConfig",
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    rules=rules,
    architectures={
        "ElectraModel": Arch("encoder", ""),
        "ElectraForPreTraining": Arch("pretraining", "electra."),
        "ElectraForSequenceClassification": Arch("seq_cls", "electra."),
        "ElectraForTokenClassification": Arch("token_cls", "electra."),
    },
    export={
        "encoder": "ElectraModel",
        "pretraining": "ElectraForPreTraining",
        "seq_cls": "ElectraForSequenceClassification",
        "token_cls": "ElectraForTokenClassification",
    },
    tasks=("encoder", "pretraining", "seq_cls", "token_cls"),
    not_exported=("generator.", "generator_head."),
    classifier_dropout_key="classifier_dropout",
)
