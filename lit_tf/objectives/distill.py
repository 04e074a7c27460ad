"""Knowledge distillation: a teacher's outputs as training targets for a smaller student.

Two recipes share the pieces here:

- DistilBERT (Sanh et al., 2019): the student is initialised from every other teacher layer
  (`every_other_layer`, `init_student_from_teacher`) and pretrained on the MLM objective with a
  soft-target term (`kd_loss`, Hinton et al., 2015), its own hard-label MLM loss and a cosine
  term aligning the last hidden states (`cosine_loss`).
- TinyBERT (Jiao et al., 2020): the student also matches, through learned width projections,
  the hidden states (`hidden_mse`) and the attention probabilities (`attention_mse`) of the
  teacher layers `layer_map` assigns it, plus the embedding outputs.

`ActivationCapture` records per-block hidden states and attention probabilities with hooks, so
no model code changes; `DistillationObjective` mixes the terms behind the usual objective
contract (`(model, batch, step) -> ObjectiveOutput`). Every loss returns `(loss_sum, n)`: an fp32
scalar sum and an int64 count, never a mean. Shapes: B = batch, T = sequence length, C = width,
H = heads, K = classes (or vocabulary), N = scored rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_tf.objectives.finetune import classifier_forward
from lit_tf.objectives.losses import IGNORE_INDEX, _sum_cross_entropy, masked_accuracy, mlm_loss, weighted_sum
from lit_tf.objectives.pretraining import (
    Count,
    ObjectiveOutput,
    _accuracy,
    attention_mask,
    mlm_positions,
    mlm_targets,
)

__all__ = [
    "ActivationCapture",
    "DistillationObjective",
    "attention_mse",
    "cosine_loss",
    "every_other_layer",
    "hidden_mse",
    "init_student_from_teacher",
    "kd_loss",
    "layer_map",
    "pretraining_forward",
]


# ----------------------------------------------------------------------------- losses
def _count(n: int | Tensor, device: torch.device) -> Tensor:
    return torch.as_tensor(n, dtype=torch.int64, device=device)


def _real(mask: Tensor | None, shape: tuple[int, int], device: torch.device) -> Tensor:
    """A (B, T) bool mask of real positions (all True when `mask` is None)."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask must have shape {tuple(shape)} (B, T), got {tuple(mask.shape)}")
    return mask.bool()


def _check_pair(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Count:
    """Soft-target distillation (Hinton et al., 2015; DistilBERT's L_ce).

    Per row: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over rows. The T^2
    keeps the gradient's scale independent of T (the soft gradients scale as 1/T^2).

    Args:
        student_logits: (N, K) scores, any leading shape (..., K) is flattened; upcast to fp32.
        teacher_logits: same shape; detached (no gradient reaches the teacher).
        temperature: T > 0.

    Returns:
        (fp32 sum over rows, int64 number of rows N).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    _check_pair(student_logits, teacher_logits, "kd_loss logits")
    K = student_logits.shape[-1]
    s = student_logits.reshape(-1, K).float() / temperature  # (N, K)
    t = teacher_logits.detach().reshape(-1, K).float() / temperature  # (N, K)
    log_ps = F.log_softmax(s, dim=-1)
    log_pt = F.log_softmax(t, dim=-1)
    kl = F.kl_div(log_ps, log_pt, reduction="sum", log_target=True)  # sum_rows sum_k p_t (log p_t - log p_s)
    return kl * (temperature * temperature), _count(s.shape[0], s.device)


def cosine_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None) -> Count:
    """DistilBERT's cosine-embedding loss on hidden states: sum over real positions of
    ``1 - cos(h_s, h_t)``.

    Args:
        student_hidden, teacher_hidden: (B, T, C), same width C (else ValueError); teacher detached.
        mask: (B, T) bool, True = real token; None = every position is real.

    Returns:
        (fp32 sum over real positions, int64 number of real positions).
    """
    cs, ct = student_hidden.shape[-1], teacher_hidden.shape[-1]
    if cs != ct:
        raise ValueError(f"cosine_loss needs equal widths: student width {cs} vs teacher width {ct} "
                         "(use the 'hidden' term with a projection for a narrower student)")
    _check_pair(student_hidden, teacher_hidden, "cosine_loss hidden states")
    real = _real(mask, student_hidden.shape[:2], student_hidden.device)  # (B, T)
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)  # (B, T)
    per_pos = torch.where(real, 1.0 - cos, torch.zeros_like(cos))  # padded positions: 0, whatever they hold
    return per_pos.sum(), real.sum()


def hidden_mse(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None) -> Count:
    """TinyBERT's hidden-state loss: sum over real positions of the mean over channels of
    ``(h_s - h_t)^2``. The caller projects the student to the teacher's width first.

    Args:
        student_hidden, teacher_hidden: (B, T, C); teacher detached.
        mask: (B, T) bool, True = real token; None = every position is real.

    Returns:
        (fp32 sum over real positions of the per-position MSE, int64 number of real positions).
    """
    _check_pair(student_hidden, teacher_hidden, "hidden_mse hidden states")
    real = _real(mask, student_hidden.shape[:2], student_hidden.device)  # (B, T)
    err = (student_hidden.float() - teacher_hidden.detach().float()).pow(2).mean(dim=-1)  # (B, T)
    return torch.where(real, err, torch.zeros_like(err)).sum(), real.sum()


def attention_mse(student_probs: Tensor, teacher_probs: Tensor, mask: Tensor | None) -> Count:
    """TinyBERT's attention loss on attention probabilities (B, H, T, T) (query, key).

    Head counts: when the student's and teacher's differ, each side is first averaged over its
    heads (one (B, 1, T, T) map per side); when equal, heads are matched one to one.

    Normalisation: one *row* is one (head, real query) pair; its error is the mean over the real
    keys of that sequence of the squared difference (padded keys are left out, so adding padding
    changes nothing). The loss sum adds the rows' errors; n = number of rows
    = H' * (number of real positions), with H' the matched head count (1 after averaging).
    So sum / n is the mean squared error per (head, query, key) within each sequence.

    Args:
        student_probs, teacher_probs: (B, H_s, T, T) and (B, H_t, T, T); teacher detached.
        mask: (B, T) bool, True = real token; None = every position is real.

    Returns:
        (fp32 sum over rows, int64 number of rows).
    """
    s, t = student_probs.float(), teacher_probs.detach().float()
    if s.dim() != 4 or t.dim() != 4:
        raise ValueError(f"attention_mse needs (B, H, T, T) probabilities, got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[1] != t.shape[1]:
        s = s.mean(dim=1, keepdim=True)  # (B, 1, T, T)
        t = t.mean(dim=1, keepdim=True)  # (B, 1, T, T)
    _check_pair(s, t, "attention_mse probabilities")
    B, H, T, _ = s.shape
    real = _real(mask, (B, T), s.device)  # (B, T)
    keys = real.view(B, 1, 1, T).to(s.dtype)  # (B, 1, 1, T_k)
    n_keys = keys.sum(dim=-1).clamp(min=1)  # (B, 1, 1)
    sq = torch.where(keys > 0, (s - t).pow(2), torch.zeros_like(s))  # (B, H, T_q, T_k)
    row_err = sq.sum(dim=-1) / n_keys  # (B, H, T_q): mean over real keys
    row_err = torch.where(real.view(B, 1, T), row_err, torch.zeros_like(row_err))  # real queries only
    return row_err.sum(), real.sum() * H


# ----------------------------------------------------------------------------- layer choices
def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """TinyBERT's uniform map: the teacher layer (0-based) each student layer learns from.

    Student layer i <- teacher layer (i + 1) * n_teacher // n_student - 1, so the last student
    layer always learns from the last teacher layer (e.g. 2 <- 4: [1, 3]; 4 <- 12: [2, 5, 8, 11]).
    """
    if n_student <= 0 or n_teacher <= 0:
        raise ValueError(f"layer counts must be positive, got n_student={n_student}, n_teacher={n_teacher}")
    if n_student > n_teacher:
        raise ValueError(f"a student ({n_student} layers) cannot be deeper than its teacher ({n_teacher} layers)")
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def every_other_layer(n_student: int, n_teacher: int) -> list[int]:
    """DistilBERT's student initialisation: the teacher layer each student layer is copied from,
    ``[i * (n_teacher // n_student) for i in range(n_student)]`` (6 <- 12: [0, 2, 4, 6, 8, 10])."""
    if n_student <= 0 or n_teacher <= 0:
        raise ValueError(f"layer counts must be positive, got n_student={n_student}, n_teacher={n_teacher}")
    if n_student > n_teacher:
        raise ValueError(f"a student ({n_student} layers) cannot be deeper than its teacher ({n_teacher} layers)")
    step = n_teacher // n_student
    return [i * step for i in range(n_student)]


def _layer_pattern(blocks: str) -> re.Pattern[str]:
    # "<blocks>.<i>." at the start of a key or after a dot: group 1 = prefix, group 2 = index
    return re.compile(rf"(^|\.){re.escape(blocks)}\.(\d+)\.")


def _layer_indices(keys: Sequence[str], pattern: re.Pattern[str]) -> set[int]:
    return {int(m.group(2)) for k in keys if (m := pattern.search(k))}


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, blocks: str = "blocks") -> dict[str, list[str]]:
    """Copy the teacher's weights into the student wherever the shapes allow (DistilBERT's init).

    A student key with a layer index (``.<blocks>.<i>.`` inside it, or ``<blocks>.<i>.`` at its
    start) takes the teacher key with index ``every_other_layer(n_s, n_t)[i]``; every other key
    takes the same teacher key. Layer counts are the distinct indices in each state dict.
    Tensors are copied in place under no_grad into the student's own storage, so tied parameters
    (e.g. an MLM decoder tied to the word embeddings) stay tied: each storage is written once.

    Returns:
        ``{"copied": [student keys], "skipped": ["key (reason)", ...]}``: skipped keys keep their
        initialisation; the reason is a missing teacher key or a shape mismatch.

    Raises:
        ValueError: when the student has more layers than the teacher.
    """
    pattern = _layer_pattern(blocks)
    s_state = student.state_dict()
    t_state = teacher.state_dict()
    n_s = len(_layer_indices(list(s_state), pattern))
    n_t = len(_layer_indices(list(t_state), pattern))
    source = every_other_layer(n_s, n_t) if n_s and n_t else []

    def teacher_key(key: str) -> str | None:
        m = pattern.search(key)
        if m is None:
            return key
        i = int(m.group(2))
        if i >= len(source):
            return None
        return f"{key[: m.start()]}{m.group(1)}{blocks}.{source[i]}.{key[m.end():]}"

    copied: list[str] = []
    skipped: list[str] = []
    written: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}  # storage view -> key that wrote it
    with torch.no_grad():
        for key, dst in s_state.items():
            view = (dst.data_ptr(), tuple(dst.shape), tuple(dst.stride()))
            if view in written:  # a tied alias of a tensor already written: stays tied, same values
                copied.append(key)
                continue
            src_key = teacher_key(key)
            if src_key is None or src_key not in t_state:
                skipped.append(f"{key} (no teacher key {src_key or 'for this layer'})")
                continue
            src = t_state[src_key]
            if src.shape != dst.shape:
                skipped.append(f"{key} (shape {tuple(dst.shape)} vs teacher {tuple(src.shape)})")
                continue
            dst.copy_(src)
            written[view] = key
            copied.append(key)
    return {"copied": copied, "skipped": skipped}


# ----------------------------------------------------------------------------- activation capture
def _attention_call_args(args: tuple, kwargs: Mapping[str, Any]) -> tuple[Tensor, Tensor | None, bool]:
    """(x, key_padding_mask, is_causal) of a `MultiHeadAttention.forward` call, positional or keyword."""
    x = args[0] if args else kwargs["x"]
    mask = args[1] if len(args) > 1 else kwargs.get("key_padding_mask")
    is_causal = args[2] if len(args) > 2 else kwargs.get("is_causal", False)
    return x, mask, bool(is_causal)


def attention_probs(attn: nn.Module, x: Tensor, key_padding_mask: Tensor | None = None,
                    is_causal: bool = False) -> Tensor:
    """The attention probabilities a `MultiHeadAttention` computes on x (B, T, C), recomputed:
    ``softmax(q k^T / sqrt(Dh))`` with padded keys (key_padding_mask False) and, with is_causal,
    future keys at -inf -> (B, H, T_q, T_k) fp32, before attention dropout. As in the module, a
    query with no visible key attends to every key (finite, meaningless)."""
    B, T, _ = x.shape
    H, Dh = attn.n_heads, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, Dh).transpose(1, 2).float()  # (B, H, T, Dh)
    k = attn.k_proj(x).view(B, T, H, Dh).transpose(1, 2).float()  # (B, H, T, Dh)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(Dh)  # (B, H, T_q, T_k)
    visible = torch.ones(1, 1, T, T, dtype=torch.bool, device=x.device)  # (1, 1, T_q, T_k)
    if key_padding_mask is not None:
        visible = visible & key_padding_mask.bool().view(B, 1, 1, T)  # (B, 1, T_q, T_k)
    if is_causal:
        visible = visible & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (B, 1, T_q, T_k)
    visible = visible | ~visible.any(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)


class ActivationCapture:
    """Record block activations during forward passes, through hooks (no model code changes).

    ``with ActivationCapture(model.bert.blocks, attention=True) as cap: model(...)`` fills

    - ``cap.embeddings``: the input of ``blocks[0]`` (the embedding output), (B, T, C), of the
      latest forward (None before one);
    - ``cap.hidden``: each block's output (B, T, C), one entry per block call, in call order;
    - ``cap.attentions`` (with ``attention=True``): each block's ``.attn`` probabilities
      (B, H, T, T) fp32, recomputed by `attention_probs` from the attention's input with its
      ``key_padding_mask`` (True = real) and ``is_causal``, passed positionally or by keyword.

    Tensors keep their autograd graph (a student's losses back-propagate through them); under
    ``torch.no_grad()`` they have none. ``clear()`` empties the records; hooks are removed on exit.
    """

    def __init__(self, blocks: Sequence[nn.Module], attention: bool = False):
        self.blocks = list(blocks)
        if not self.blocks:
            raise ValueError("ActivationCapture needs at least one block")
        self.attention = bool(attention)
        if self.attention:
            for i, b in enumerate(self.blocks):
                attn = getattr(b, "attn", None)
                if attn is None or not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "n_heads", "head_dim")):
                    raise ValueError(f"block {i} ({type(b).__name__}) has no MultiHeadAttention `.attn` to capture")
        self.embeddings: Tensor | None = None
        self.hidden: list[Tensor] = []
        self.attentions: list[Tensor] = []
        self._handles: list[Any] = []

    def clear(self) -> None:
        self.embeddings = None
        self.hidden.clear()
        self.attentions.clear()

    def _on_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.embeddings = args[0] if args else kwargs["x"]

    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.hidden.append(output[0] if isinstance(output, tuple) else output)

    def _on_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x, mask, is_causal = _attention_call_args(args, kwargs)
        self.attentions.append(attention_probs(module, x, mask, is_causal))

    def __enter__(self) -> ActivationCapture:
        self.clear()
        self._handles.append(self.blocks[0].register_forward_pre_hook(self._on_input, with_kwargs=True))
        for b in self.blocks:
            self._handles.append(b.register_forward_hook(self._on_output))
            if self.attention:
                self._handles.append(b.attn.register_forward_pre_hook(self._on_attention, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


# ----------------------------------------------------------------------------- the objective
def pretraining_forward(model: nn.Module, batch: Mapping[str, Tensor]):
    """Run a pre-training model on an MLM batch for logits at the masked rows: (N, V) ``mlm_logits``
    and (B, T, C) ``hidden``. Batches with ``lang_ids`` (XLM streams) pass them and
    ``position_ids``; others pass ``token_type_ids`` (BERT)."""
    kwargs: dict[str, Any] = {"attention_mask": attention_mask(batch), "mlm_positions": mlm_positions(batch)}
    if "lang_ids" in batch:
        kwargs["lang_ids"] = batch["lang_ids"]
        if "position_ids" in batch:
            kwargs["position_ids"] = batch["position_ids"]
    else:
        kwargs["token_type_ids"] = batch.get("token_type_ids")
    return model(batch["input_ids"], **kwargs)


class _Frozen:
    """Holds the teacher outside the module tree: not in parameters(), state_dict() or .to()."""

    def __init__(self, module: nn.Module):
        self.module = module


def _first_device(module: nn.Module) -> torch.device | None:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


def _block_width(blocks: Sequence[nn.Module], given: int | None, who: str) -> int:
    if given is not None:
        return int(given)
    width = getattr(getattr(blocks[0], "attn", None), "d_model", None) if blocks else None
    if width is None:
        raise ValueError(f"distillation: pass {who}_width (the {who}'s hidden size) for the 'hidden' term")
    return int(width)


class DistillationObjective(nn.Module):
    """Teacher-to-student distillation for any encoder family.

    kind "mlm" (DistilBERT-style pretraining): MLM-collator batches (``input_ids``,
    ``attention_mask``, ``token_type_ids`` or ``lang_ids``, ``mlm_labels``, maybe
    ``mlm_index``/``mlm_targets``); both models are pre-training models returning ``mlm_logits``
    (N, V) at `mlm_positions` and ``hidden`` (B, T, C) (`pretraining_forward`).
    kind "cls" (task-specific): fine-tuning batches with ``labels`` (B,) (sequence) or (B, T)
    with IGNORE_INDEX (token classification); both models are classifiers run through
    ``forward(model, batch)`` (default `classifier_forward`) returning ``logits`` and ``hidden``.

    Terms (the keys of ``weights``; weight 0 leaves a term out):

    - ``kd``: `kd_loss` of student vs teacher logits (mlm: masked rows; cls: labelled rows).
    - ``student``: the student's own hard-label loss (MLM cross-entropy / classification CE).
    - ``cos``: `cosine_loss` of the last hidden states (equal widths only).
    - ``hidden``: `hidden_mse` over the embedding outputs and each (student layer i, teacher layer
      ``layer_map(...)[i]``) pair, the student side through a learned
      ``nn.Linear(student_width, teacher_width)`` per pair (identity-initialised when the widths
      are equal), owned by this module; the pairs' counts are added into one term.
    - ``attn``: `attention_mse` over the same layer pairs, counts added.

    ``hidden``/``attn`` need ``student_blocks``/``teacher_blocks`` (the models' block modules,
    in order); widths default to the blocks' ``attn.d_model``.

    The teacher stays outside the module tree (not in parameters(), state_dict(), nor moved by
    .to()): frozen and in eval mode once, moved to the batch's device on use, run under no_grad.

    Teacher cache (kind "cls", ``cache_teacher``, terms needing teacher logits only): logits are
    memoised per example on CPU fp32, keyed by the bytes of its real input ids (+ token type /
    language ids); the teacher runs only on the rows not cached yet. ``teacher_calls`` counts
    teacher forward passes, ``cache_hits`` rows served from the cache.
    """

    TERMS = ("kd", "student", "cos", "hidden", "attn")
    KINDS = ("mlm", "cls")

    def __init__(
        self,
        teacher: nn.Module,
        kind: str,
        *,
        temperature: float = 2.0,
        weights: Mapping[str, float],
        student_blocks: Sequence[nn.Module] = (),
        teacher_blocks: Sequence[nn.Module] = (),
        student_width: int | None = None,
        teacher_width: int | None = None,
        forward: Callable | None = None,
        cache_teacher: bool = True,
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"distillation kind must be one of {self.KINDS}, got {kind!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"distillation temperature must be > 0, got {temperature!r}")
        unknown = sorted(set(weights) - set(self.TERMS))
        if unknown:
            raise ValueError(f"distillation weights: unknown terms {unknown}; allowed: {list(self.TERMS)}")
        self.weights = {k: float(weights[k]) for k in self.TERMS if k in weights and float(weights[k]) != 0.0}
        if not self.weights:
            raise ValueError(f"distillation weights: no term has a non-zero weight (got {dict(weights)})")
        self.kind = kind
        self.temperature = float(temperature)
        self.forward_fn = forward or (pretraining_forward if kind == "mlm" else classifier_forward)

        self._teacher = _Frozen(teacher)
        teacher.eval()
        teacher.requires_grad_(False)

        self.student_blocks = list(student_blocks)  # plain lists: the blocks belong to the models
        self.teacher_blocks = list(teacher_blocks)
        self.pairs: list[int] = []
        if "hidden" in self.weights or "attn" in self.weights:
            if not self.student_blocks or not self.teacher_blocks:
                raise ValueError("distillation terms 'hidden'/'attn' need student_blocks and teacher_blocks")
            self.pairs = layer_map(len(self.student_blocks), len(self.teacher_blocks))
        self.projections = nn.ModuleList()
        if "hidden" in self.weights:
            sw = _block_width(self.student_blocks, student_width, "student")
            tw = _block_width(self.teacher_blocks, teacher_width, "teacher")
            for _ in range(len(self.pairs) + 1):  # the embedding outputs, then one per mapped layer
                proj = nn.Linear(sw, tw)
                if sw == tw:
                    with torch.no_grad():
                        proj.weight.copy_(torch.eye(sw))
                        proj.bias.zero_()
                self.projections.append(proj)
        if "cos" in self.weights and None not in (student_width, teacher_width) and student_width != teacher_width:
            raise ValueError(f"distillation term 'cos' needs equal widths: student width {student_width} "
                             f"vs teacher width {teacher_width}")

        self.use_cache = bool(cache_teacher) and kind == "cls" and not ({"cos", "hidden", "attn"} & set(self.weights))
        self._cache: dict[bytes, Tensor] = {}
        self.teacher_calls = 0
        self.cache_hits = 0

    @property
    def teacher(self) -> nn.Module:
        return self._teacher.module

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(self.weights)

    @property
    def val_terms(self) -> tuple[str, ...]:
        return self.terms

    def combine(self, terms: Mapping[str, Count], step: int = 0) -> Tensor:
        """The weighted loss of per-term `(sum, n)` counts (each term reduced to its mean first):
        of one batch, or summed over a whole evaluation."""
        return weighted_sum(terms, self.weights)

    # -- teacher
    def _teacher_on(self, device: torch.device) -> nn.Module:
        teacher = self.teacher
        current = _first_device(teacher)
        if current is not None and current != device:
            teacher.to(device)
        return teacher

    def _logits(self, out: Any) -> Tensor:
        return out.mlm_logits if self.kind == "mlm" else out.logits

    def _run_teacher(self, batch: Mapping[str, Tensor], capture: bool, attention: bool
                     ) -> tuple[Any, ActivationCapture | None]:
        teacher = self._teacher_on(batch["input_ids"].device)
        self.teacher_calls += 1
        with torch.no_grad():
            if not capture:
                return self.forward_fn(teacher, batch), None
            with ActivationCapture(self.teacher_blocks, attention=attention) as cap:
                out = self.forward_fn(teacher, batch)
            return out, cap

    def _cache_keys(self, batch: Mapping[str, Tensor]) -> list[bytes]:
        ids = batch["input_ids"].cpu()  # (B, T)
        mask = batch["attention_mask"].bool().cpu() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
        extras = [(name, batch[name].cpu()) for name in ("token_type_ids", "lang_ids") if batch.get(name) is not None]
        keys = []
        for b in range(ids.shape[0]):
            real = mask[b]
            parts = [ids[b][real].to(torch.int64).numpy().tobytes()]
            parts += [name.encode() + b":" + x[b][real].to(torch.int64).numpy().tobytes() for name, x in extras]
            keys.append(b"|".join(parts))
        return keys

    def _cached_teacher_logits(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Teacher logits for a cls batch, (B, K) or (B, T, K), from the cache where it can."""
        device = batch["input_ids"].device
        keys = self._cache_keys(batch)
        missing = [b for b, k in enumerate(keys) if k not in self._cache]
        self.cache_hits += len(keys) - len(missing)
        mask = batch["attention_mask"].bool().cpu() if "attention_mask" in batch else None
        if missing:
            B = len(keys)
            idx = torch.tensor(missing, device=device)
            sub = {k: (v.index_select(0, idx) if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == B else v)
                   for k, v in batch.items()}
            fresh = self._logits(self._run_teacher(sub, capture=False, attention=False)[0]).float().cpu()
            for j, b in enumerate(missing):
                row = fresh[j]  # (K,) or (T, K)
                if row.dim() == 2 and mask is not None:
                    row = row[mask[b]]  # (T_real, K): token logits at real positions only
                self._cache[keys[b]] = row.clone()
        rows = [self._cache[k] for k in keys]
        if rows[0].dim() == 1:
            return torch.stack(rows).to(device)  # (B, K)
        B, T = batch["input_ids"].shape
        out = torch.zeros(B, T, rows[0].shape[-1])  # (B, T, K), zeros at padding
        for b, row in enumerate(rows):
            if mask is None:
                out[b] = row
            else:
                out[b, mask[b]] = row
        return out.to(device)

    def teacher_logits_for(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The teacher's logits on a batch, without gradient: (N, V) at the masked rows (mlm),
        (B, K) or (B, T, K) (cls, through the cache when it is on). E.g. for a callback that
        reports the teacher's own accuracy once."""
        if self.use_cache:
            return self._cached_teacher_logits(batch)
        return self._logits(self._run_teacher(batch, capture=False, attention=False)[0]).float()

    # -- the step
    def forward(self, model: nn.Module, batch: Mapping[str, Tensor], step: int = 0) -> ObjectiveOutput:
        active = set(self.weights)
        layers = bool({"hidden", "attn"} & active)
        attention = "attn" in active
        if layers:
            with ActivationCapture(self.student_blocks, attention=attention) as s_cap:
                out = self.forward_fn(model, batch)
            if len(s_cap.hidden) != len(self.student_blocks):
                raise ValueError(f"distillation: student_blocks recorded {len(s_cap.hidden)} block outputs, expected "
                                 f"{len(self.student_blocks)}: are they the blocks of the model being trained?")
        else:
            out = self.forward_fn(model, batch)
        logits = self._logits(out)

        t_out, t_cap, t_logits = None, None, None
        if active - {"student"}:
            if self.use_cache:
                t_logits = self._cached_teacher_logits(batch)
            else:
                t_out, t_cap = self._run_teacher(batch, capture=layers, attention=attention)
                t_logits = self._logits(t_out)

        mask = batch["attention_mask"].bool() if "attention_mask" in batch else None  # (B, T), True = real
        terms: dict[str, Count] = {}
        acc: dict[str, Count] = {}
        preds: dict[str, tuple[Tensor, Tensor]] = {}
        if self.kind == "mlm":
            targets = mlm_targets(batch)  # (N,)
            if "kd" in active:
                terms["kd"] = kd_loss(logits, t_logits, self.temperature)
            if "student" in active:
                terms["student"] = mlm_loss(logits, targets)
            if (hits := _accuracy(model, logits, targets)) is not None:
                acc["student"] = hits
        else:
            labels = batch["labels"]  # (B,) or (B, T)
            if "kd" in active:
                rows = labels != IGNORE_INDEX
                terms["kd"] = kd_loss(logits[rows], t_logits[rows], self.temperature)  # (N, K) labelled rows
            if "student" in active:
                terms["student"] = _sum_cross_entropy(logits, labels)
            acc["student"] = masked_accuracy(logits.detach(), labels)
            pred = logits.detach().argmax(-1)  # (B,) or (B, T)
            if labels.dim() == 2:
                pred = pred.masked_fill(labels == IGNORE_INDEX, IGNORE_INDEX)
            preds["student"] = (pred, labels)

        if "cos" in active:
            terms["cos"] = cosine_loss(out.hidden, t_out.hidden, mask)
        if "hidden" in active:
            s_states = [s_cap.embeddings, *s_cap.hidden]
            t_states = [t_cap.embeddings, *(t_cap.hidden[j] for j in self.pairs)]
            parts = [hidden_mse(p(s), t, mask) for p, s, t in zip(self.projections, s_states, t_states)]
            terms["hidden"] = (sum(c[0] for c in parts), sum(c[1] for c in parts))
        if "attn" in active:
            parts = [attention_mse(s_cap.attentions[i], t_cap.attentions[j], mask) for i, j in enumerate(self.pairs)]
            terms["attn"] = (sum(c[0] for c in parts), sum(c[1] for c in parts))
        return ObjectiveOutput(loss=self.combine(terms), terms=terms, accuracy=acc, predictions=preds)
