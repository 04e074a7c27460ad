"""BERT <-> HF ``BertModel`` / ``BertForPreTraining`` / ``BertForMaskedLM`` /
``BertFor{Sequence,Token}Classification``: key rules and config maps."""

from __future__ import annotations

from typing import Any

from lit_tf.models.bert import BertConfig
from lit_tf.models.hf.core import (
    ACT_TO_HF,
    Arch,
    Groups,
    HFMapping,
    Rule,
    activation_from_hf,
    module,
    require,
    same,
)


def embedding_rules(h: str, o: str) -> list[Rule]:
    """BERT-layout embeddings (word, position, token type, LayerNorm) under HF prefix ``h``, ours ``o``."""
    return [
        *module(f"{h}embeddings.word_embeddings", f"{o}embeddings.word_embeddings", ("weight",)),
        *module(f"{h}embeddings.position_embeddings", f"{o}embeddings.position_embeddings", ("weight",)),
        *module(f"{h}embeddings.token_type_embeddings", f"{o}embeddings.token_type_embeddings", ("weight",)),
        *module(f"{h}embeddings.LayerNorm", f"{o}embeddings.norm"),
    ]


def layer_rules(h: str, o: str, n_layers: int) -> list[Rule]:
    """HF ``encoder.layer.<i>`` (BERT's layout, which ELECTRA shares) <-> our ``blocks.<i>`` (BertBlock)."""
    rules: list[Rule] = []
    for i in range(n_layers):
        hl, ol = f"{h}encoder.layer.{i}.", f"{o}blocks.{i}."
        rules += [
            *module(f"{hl}attention.self.query", f"{ol}attn.q_proj"),
            *module(f"{hl}attention.self.key", f"{ol}attn.k_proj"),
            *module(f"{hl}attention.self.value", f"{ol}attn.v_proj"),
            *module(f"{hl}attention.output.dense", f"{ol}attn.out_proj"),
            *module(f"{hl}attention.output.LayerNorm", f"{ol}attn_norm"),
            *module(f"{hl}intermediate.dense", f"{ol}ffn.fc_in"),
            *module(f"{hl}output.dense", f"{ol}ffn.fc_out"),
            *module(f"{hl}output.LayerNorm", f"{ol}ffn_norm"),
        ]
    return rules


def rules(task: str, cfg: BertConfig, hf_base: str) -> Groups:
    """Rules of our BERT model for ``task`` against a checkpoint whose encoder keys start with ``hf_base``."""
    o = "" if task == "encoder" else "bert."  # our encoder prefix
    groups: Groups = {"encoder": embedding_rules(hf_base, o) + layer_rules(hf_base, o, cfg.n_layers)}
    if task in ("encoder", "pretraining", "seq_cls"):
        # HF keeps the pooler inside BertModel; ours sits in the NSP head or the classifier model.
        # Our bare BertModel has none: its rule names a key it lacks, so to_hf / from_hf skip it,
        # yet HF BertModel checkpoints' pooler keys are known and reach a seq_cls / NSP pooler.
        ours = "nsp_head.pooler.dense" if task == "pretraining" else "pooler.dense"
        groups["pooler"] = module(f"{hf_base}pooler.dense", ours)
    if task in ("pretraining", "mlm"):
        groups["mlm"] = [
            *module("cls.predictions.transform.dense", "mlm_head.dense"),
            *module("cls.predictions.transform.LayerNorm", "mlm_head.norm"),
            same("cls.predictions.bias", "mlm_head.bias"),
        ]
    if task == "pretraining":
        groups["nsp"] = module("cls.seq_relationship", "nsp_head.classifier")
    if task in ("seq_cls", "token_cls"):
        groups[task] = module("classifier", "classifier")
    return groups


def config_to_hf(cfg: BertConfig) -> dict[str, Any]:
    """HF BertConfig keys; ELECTRA's config shares them (its own adds `embedding_size`)."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.d_ff,
        "hidden_act": ACT_TO_HF[cfg.activation],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "max_position_embeddings": cfg.max_seq_len,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_id,
        "tie_word_embeddings": True,
    }


def check_encoder_config(d: dict[str, Any]) -> None:
    """What BERT-layout encoders (BERT, ELECTRA) of HF may set that ours cannot represent."""
    position_type = d.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"HF config position_embedding_type={position_type!r} is not supported (only 'absolute')")
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise ValueError("HF decoders (is_decoder / add_cross_attention) are not supported")


def encoder_fields(d: dict[str, Any], arch: str) -> dict[str, Any]:
    """Our config fields of an HF BERT-layout encoder config (BERT's, ELECTRA's), checked."""
    check_encoder_config(d)
    return dict(
        vocab_size=require(d, "vocab_size", arch),
        d_model=require(d, "hidden_size", arch),
        n_layers=require(d, "num_hidden_layers", arch),
        n_heads=require(d, "num_attention_heads", arch),
        d_ff=require(d, "intermediate_size", arch),
        max_seq_len=d.get("max_position_embeddings", 512),
        dropout=d.get("hidden_dropout_prob", 0.1),
        attn_dropout=d.get("attention_probs_dropout_prob", 0.1),
        type_vocab_size=d.get("type_vocab_size", 2),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        init_std=d.get("initializer_range", 0.02),
        pad_id=d.get("pad_token_id") or 0,
        activation=activation_from_hf(d.get("hidden_act", "gelu"), "hidden_act"),
    )


def config_from_hf(d: dict[str, Any], arch: str) -> BertConfig:
    return BertConfig(**encoder_fields(d, arch))


MAPPING = HFMapping(
    config_class="BertConfig",
    config_to_hf=config_to_hf,
    config_from_hf=config_from_hf,
    rules=rules,
    architectures={
        "BertModel": Arch("encoder", ""),
        "BertForPreTraining": Arch("pretraining", "bert."),
        "BertForMaskedLM": Arch("mlm", "bert."),
        "BertForSequenceClassification": Arch("seq_cls", "bert."),
        "BertForTokenClassification": Arch("token_cls", "bert."),
    },
    export={
        "encoder": "BertModel",
        "pretraining": "BertForPreTraining",
        "mlm": "BertForMaskedLM",
        "seq_cls": "BertForSequenceClassification",
        "token_cls": "BertForTokenClassification",
    },
    tasks=("encoder", "pretraining", "mlm", "seq_cls", "token_cls"),
    classifier_dropout_key="classifier_dropout",
)
