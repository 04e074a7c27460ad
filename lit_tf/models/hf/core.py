"""The family-independent half of the HF mapping: rules, the per-family mapping record, and
`to_hf` / `from_hf`, which read everything family-specific from the family's spec
(`lit_tf.models.families.FAMILIES[...]`) and its `HFMapping` (one module per family in this package).

``transformers``, ``safetensors`` and ``tokenizers`` are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    import transformers

    from lit_tf.models.families import FamilySpec

# The special tokens our tokenizers define (lit_tf.data.tokenizer.SPECIAL_TOKENS), by HF role.
SPECIAL_TOKEN_ROLES = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}

# Activation names: ours -> HF's and HF's -> ours. HF "gelu" is the exact (erf) GELU; "gelu_new"
# is GPT-2's tanh approximation; "gelu_pytorch_tanh" is the same formula in one fused kernel.
ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

# HF keys that are never parameters of their own: non-persistent buffers older checkpoints saved,
# and tied copies of the embedding matrix / LM bias (save_pretrained drops these; older files keep them).
IGNORED_SUFFIXES = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "position_ids",
    ".attn.bias",  # GPT-2's causal-mask buffer in checkpoints before transformers 4.31
    ".attn.masked_bias",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "lm_head.weight",
    "pred_layer.proj.weight",
    "generator_lm_head.weight",
)


# ----------------------------------------------------------------------------- mapping rules


@dataclass(frozen=True)
class Rule:
    """One HF tensor <-> one or more lit_tf tensors, with the layout change in each direction."""

    hf: str  # HF state-dict key
    ours: tuple[str, ...]  # lit_tf state-dict key(s)
    to_hf: Callable[[Sequence[Tensor]], Tensor]  # our tensors (in `ours` order) -> the HF tensor
    from_hf: Callable[[Tensor], list[Tensor]]  # the HF tensor -> our tensors (in `ours` order)


def same(hf: str, ours: str) -> Rule:
    """A tensor with the same layout under two names."""
    return Rule(hf, (ours,), lambda ts: ts[0], lambda t: [t])


def module(hf: str, ours: str, params: tuple[str, ...] = ("weight", "bias")) -> list[Rule]:
    """Identical-layout parameters of a Linear / LayerNorm / Embedding under two names."""
    return [same(f"{hf}.{p}", f"{ours}.{p}") for p in params]


# Rules are grouped: "encoder" is always loaded on import; a head group is loaded only when the
# checkpoint's architecture has the same group (see Arch.task), otherwise it keeps our init.
Groups = dict[str, list[Rule]]


@dataclass(frozen=True)
class Arch:
    """An HF architecture we read: the lit_tf task it corresponds to and where its encoder keys live."""

    task: str  # the lit_tf task whose rules name exactly this architecture's keys
    hf_base: str  # prefix of the encoder keys ("bert.", "transformer." or "" for bare encoders)
    extra_keys: tuple[str, ...] = ()  # further known keys we never map
    config_class: str | None = None  # its transformers config class when not the family's (MBart within BART's family)


@dataclass(frozen=True)
class HFMapping:
    """Everything one family's HF correspondence needs; the family spec points at it."""

    config_class: str  # the transformers config class, e.g. "BertConfig"
    config_to_hf: Callable[[Any], dict[str, Any]]  # our config -> HF config keys
    config_from_hf: Callable[[dict[str, Any], str], Any]  # (HF config dict, architecture name) -> our config
    rules: Callable[[str, Any, str], Groups]  # (lit_tf task, our config, HF encoder prefix) -> rule groups
    architectures: Mapping[str, Arch]  # HF architecture name -> what it holds
    export: Mapping[str, str]  # lit_tf task -> the HF architecture export writes
    tasks: tuple[str, ...]  # the lit_tf tasks from_hf can build
    # our state-dict prefixes export leaves out (e.g. ELECTRA's generator: HF's ElectraForPreTraining
    # is the discriminator alone)
    not_exported: tuple[str, ...] = ()
    # lit_tf task -> why it cannot be exported exactly (NotImplementedError's message)
    export_refusals: Mapping[str, str] = field(default_factory=dict)
    # keyword of the head models' classifier dropout in HF configs (None: the family has none)
    classifier_dropout_key: str | None = None
    # (lit_tf task, our config) -> the HF architecture export writes, when the config decides it
    # (a pre-LN seq2seq model is MBart, a post-LN one BART); None: `export[task]`
    export_arch: Callable[[str, Any], str] | None = None


def require(d: dict[str, Any], key: str, arch: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"HF config for {arch} has no {key!r}")
    return d[key]


def activation_from_hf(name: Any, key: str) -> str:
    if name not in ACT_FROM_HF:
        raise ValueError(f"HF config {key}={name!r} is not supported; supported: {sorted(ACT_FROM_HF)}")
    return ACT_FROM_HF[name]


# ----------------------------------------------------------------------------- families


def _families() -> Mapping[str, FamilySpec]:
    from lit_tf.models.families import FAMILIES  # the family table imports this package's mappings

    return FAMILIES


def architectures() -> dict[str, tuple[FamilySpec, Arch]]:
    """Every supported HF architecture name -> (its family's spec, what it holds)."""
    return {name: (spec, arch) for spec in _families().values() if spec.hf is not None
            for name, arch in spec.hf.architectures.items()}


def describe(model: nn.Module) -> tuple[FamilySpec, str]:
    """(family spec, lit_tf task) of a lit_tf model."""
    for spec in _families().values():
        task = spec.task_of(model)
        if task is not None:
            return spec, task
    raise TypeError(f"no HF mapping for {type(model).__name__}")


def aliases(model: nn.Module) -> dict[str, str]:
    """Tied parameters: {alias state-dict key: first key of the same Parameter}."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


# ----------------------------------------------------------------------------- to / from HF


def config_to_hf(family: str, cfg: Any) -> dict[str, Any]:
    """The HF config keys (as a dict for the family's transformers config class) of a lit_tf config."""
    mapping = _families()[family].hf
    if mapping is None:
        raise NotImplementedError(f"the {family!r} family has no HF mapping")
    return mapping.config_to_hf(cfg)


def to_hf(model: nn.Module, labels: Sequence[str] | None = None) -> tuple[transformers.PretrainedConfig, dict[str, Tensor]]:
    """Map a lit_tf model to (HF config, HF state dict) for the architecture its family exports.

    ``labels`` (classification models only): label names, written as ``id2label``/``label2id``.
    The state dict holds fresh contiguous tensors in HF layout, without tied copies (as
    ``save_pretrained`` writes them). Raises ``NotImplementedError`` for models HF cannot represent.
    """
    import transformers

    spec, task = describe(model)
    mapping = spec.hf
    if mapping is None:
        raise NotImplementedError(f"the {spec.name!r} family has no HF mapping")
    if task in mapping.export_refusals:
        raise NotImplementedError(mapping.export_refusals[task])
    if task not in mapping.export:
        raise NotImplementedError(f"{type(model).__name__} has no exact HF counterpart; exportable: "
                                  f"{', '.join(sorted(set(mapping.export.values())))}")
    cfg = model.cfg
    arch = mapping.export_arch(task, cfg) if mapping.export_arch else mapping.export[task]
    hf_dict = mapping.config_to_hf(cfg)
    hf_dict["architectures"] = [arch]
    if task in spec.heads:  # classifiers carry their label names
        num_labels: int = model.num_labels
        names = [f"LABEL_{i}" for i in range(num_labels)] if labels is None else list(labels)
        if len(names) != num_labels:
            raise ValueError(f"got {len(names)} labels for a model with num_labels={num_labels}")
        hf_dict["id2label"] = dict(enumerate(names))
        hf_dict["label2id"] = {name: i for i, name in enumerate(names)}
        dropout = getattr(getattr(model, "dropout", None), "p", cfg.dropout)
        if mapping.classifier_dropout_key and dropout != cfg.dropout:
            hf_dict[mapping.classifier_dropout_key] = dropout
    elif labels is not None:
        raise ValueError(f"labels are only meaningful for classification models, not {type(model).__name__}")
    hf_config = getattr(transformers, mapping.architectures[arch].config_class or mapping.config_class)(**hf_dict)

    ours = {k: v for k, v in model.state_dict().items() if not k.startswith(mapping.not_exported or ("\0",))}
    tied = aliases(model)
    rules = [r for group in mapping.rules(task, cfg, mapping.architectures[arch].hf_base).values() for r in group]
    rules = [r for r in rules if all(k in ours for k in r.ours)]  # e.g. our bare BertModel has no pooler
    covered = {k for r in rules for k in r.ours} | set(tied)
    unmapped = [k for k in ours if k not in covered]
    if unmapped:  # a guard for model changes the mapping has not caught up with
        raise NotImplementedError(f"no HF name for lit_tf parameter(s) {unmapped} of {type(model).__name__}")
    state = {r.hf: r.to_hf([ours[k] for k in r.ours]).detach().clone().contiguous() for r in rules}
    return hf_config, state


def _architecture(hf_config: dict[str, Any]) -> tuple[str, FamilySpec, Arch]:
    archs = hf_config.get("architectures") or []
    known = architectures()
    if len(archs) != 1 or archs[0] not in known:
        raise ValueError(f"unsupported HF architectures {archs!r}; supported: {', '.join(known)}")
    return (archs[0], *known[archs[0]])


def _num_labels(hf_config: dict[str, Any], spec: FamilySpec, arch: Arch, task: str, num_labels: int | None) -> int | None:
    if task not in spec.heads:
        if num_labels is not None:
            raise ValueError(f"num_labels is only meaningful for {' / '.join(spec.heads)}, not task {task!r}")
        return None
    if num_labels is not None:
        return num_labels
    if arch.task == task:  # the checkpoint's own classifier decides
        if hf_config.get("id2label"):
            return len(hf_config["id2label"])
        return int(hf_config.get("num_labels", 2))
    raise ValueError(f"num_labels is required to build a fresh {task} head")


def from_hf(hf_config: dict[str, Any], hf_state: dict[str, Tensor], *, task: str | None = None,
            num_labels: int | None = None) -> nn.Module:
    """Build the lit_tf model for ``task`` from an HF config (the parsed ``config.json``) and state dict.

    ``task`` None means the checkpoint's own head (see the package table). The encoder must be in
    the checkpoint; a head is loaded when the checkpoint has one with the same meaning, otherwise
    it is initialised with our policy. ``num_labels`` defaults to the checkpoint's own classifier
    size. Raises ``ValueError`` on an unsupported architecture or config, a missing or unknown key,
    or a shape mismatch (naming the key and both shapes).
    """
    arch_name, spec, arch = _architecture(hf_config)
    mapping = spec.hf
    task = arch.task if task is None else task
    if task not in mapping.tasks:
        raise ValueError(f"task {task!r} is not available for {arch_name}; choose one of {mapping.tasks}")
    cfg = mapping.config_from_hf(hf_config, arch_name)
    n_labels = _num_labels(hf_config, spec, arch, task, num_labels)
    key = mapping.classifier_dropout_key
    model = spec.build(task, cfg, num_labels=n_labels, classifier_dropout=hf_config.get(key) if key else None)

    source = mapping.rules(arch.task, cfg, arch.hf_base)  # every key the checkpoint may hold
    target = mapping.rules(task, cfg, arch.hf_base)
    known = {r.hf for group in source.values() for r in group} | set(arch.extra_keys)
    unknown = sorted(k for k in hf_state if k not in known and not k.endswith(IGNORED_SUFFIXES))
    if unknown:
        raise ValueError(f"unexpected key(s) in the {arch_name} checkpoint: {unknown[:10]}")
    if task not in ("encoder", *spec.heads) and not hf_config.get("tie_word_embeddings", True):
        raise ValueError(f"{arch_name} with tie_word_embeddings=False cannot be mapped: lit_tf heads are tied")

    state = model.state_dict()
    for name, rules in target.items():
        if name != "encoder" and name not in source:
            continue  # a head the checkpoint does not have: keep our init
        for rule in rules:
            if not all(k in state for k in rule.ours):
                continue  # e.g. the HF pooler when building our bare BertModel
            if rule.hf not in hf_state:
                raise ValueError(f"key {rule.hf!r} missing from the {arch_name} checkpoint")
            expected = tuple(rule.to_hf([state[k] for k in rule.ours]).shape)
            got = tuple(hf_state[rule.hf].shape)
            if got != expected:
                raise ValueError(
                    f"shape mismatch for {rule.hf!r}: checkpoint has {got}, lit_tf "
                    f"{type(model).__name__} expects {expected} (for {', '.join(rule.ours)})"
                )
            for k, tensor in zip(rule.ours, rule.from_hf(hf_state[rule.hf])):
                state[k] = tensor.to(state[k].dtype)
    for alias, first in aliases(model).items():  # tied copies follow their source
        state[alias] = state[first]
    model.load_state_dict(state, strict=True)
    return model
