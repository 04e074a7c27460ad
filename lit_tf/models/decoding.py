"""Translation search on an encoder-decoder's KV caches: greedy decoding and beam search.

Both take a `lit_tf.models.seq2seq.Seq2SeqModel` and a batch of sources of different lengths
(right-padded ``input_ids`` (B, S) with ``attention_mask`` (B, S), 1 = real token). Each source is
encoded once and its cross-attention keys/values are projected once (`Seq2SeqModel.cross_kv`);
every step then feeds only the newest target token to `Seq2SeqModel.decode_step`, whose
self-attention caches grow by one position. Sentences that are done leave the batch (their rows
are dropped from every cache), so a long sentence never makes the short ones work.

Terms used below:
- a hypothesis is the tokens generated after the decoder start token ``cfg.bos_id``; it ends when
  it produces ``cfg.eos_id`` or reaches the sentence's maximum length;
- maximum length (tokens generated, eos included) of a sentence with L real source tokens:
  ``min(cfg.max_seq_len - 1, ceil(max_len_ratio * L) + max_len_offset)``, or ``max_len`` for
  every sentence when given (at most ``cfg.max_seq_len``: the decoder has that many positions);
- returned hypotheses are token ids without bos and eos, one list per source row, in input order.

The whole vocabulary may be generated (no token is banned), so beam search explores the model's
own distribution. Both functions run the model in eval mode under ``torch.no_grad`` and restore
its previous train/eval mode. Shapes: B = batch, K = beam, S = source length, V = target vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lit_tf.models.seq2seq import select_cache


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def max_target_lengths(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, *,
                       max_len_ratio: float, max_len_offset: int, max_len: int | None) -> list[int]:
    """The maximum number of tokens (eos included) each source row may get; see the module docstring."""
    cfg = model.cfg
    if max_len is not None:
        if not isinstance(max_len, int) or isinstance(max_len, bool) or not 1 <= max_len <= cfg.max_seq_len:
            raise ValueError(f"max_len must be an int in [1, max_seq_len={cfg.max_seq_len}], got {max_len!r}")
        return [max_len] * input_ids.shape[0]
    if not max_len_ratio > 0 or max_len_offset < 0:
        raise ValueError(f"max_len_ratio must be > 0 and max_len_offset >= 0, got {max_len_ratio}, {max_len_offset}")
    if attention_mask is None:
        lengths = [input_ids.shape[1]] * input_ids.shape[0]
    else:
        lengths = attention_mask.bool().sum(dim=1).tolist()  # (B,) real source tokens
    cap = cfg.max_seq_len - 1
    return [max(1, min(cap, math.ceil(max_len_ratio * n) + int(max_len_offset))) for n in lengths]


def _check_inputs(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor | None:
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (B, S) with B, S >= 1, got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                         f"{tuple(input_ids.shape)}")
    return attention_mask.bool()


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    max_len: int | None = None,
) -> list[list[int]]:
    """The arg-max token at every step until eos or the maximum length, for each source row.

    input_ids (B, S), attention_mask (B, S) (1 = real token; None: no padding); max_len_ratio,
    max_len_offset, max_len: the per-sentence maximum length (module docstring).
    Returns B lists of token ids, without bos and eos. Equal to `beam_search` with beam=1."""
    src_mask = _check_inputs(input_ids, attention_mask)
    limits = max_target_lengths(model, input_ids, src_mask, max_len_ratio=max_len_ratio,
                                max_len_offset=max_len_offset, max_len=max_len)
    cfg = model.cfg
    with _eval_mode(model):
        memory_kv = model.cross_kv(model.encode(input_ids, src_mask))  # per block: (B, H, S, Dh)
        out: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
        active = list(range(input_ids.shape[0]))  # the source row of each decoding row
        last = torch.full((len(active), 1), cfg.bos_id, dtype=torch.long, device=input_ids.device)  # (B_a, 1)
        past = None
        for t in range(1, max(limits) + 1):  # t = tokens generated after this step
            logits, past = model.decode_step(last, memory_kv, src_mask, past)  # (B_a, 1, V)
            next_ids = logits[:, -1].argmax(dim=-1)  # (B_a,)
            keep = []
            for a, (b, w) in enumerate(zip(active, next_ids.tolist())):
                if w == cfg.eos_id:
                    continue
                out[b].append(w)
                if t < limits[b]:
                    keep.append(a)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch
                index = torch.tensor(keep, device=input_ids.device)
                past, memory_kv = select_cache(past, index), select_cache(memory_kv, index)
                src_mask = None if src_mask is None else src_mask.index_select(0, index)
                next_ids = next_ids.index_select(0, index)
                active = [active[a] for a in keep]
            last = next_ids.unsqueeze(1)  # (B_a, 1)
        return out


@torch.no_grad()
def beam_search(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    beam: int = 5,
    length_penalty: float = 1.0,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    max_len: int | None = None,
    early_stop: bool = True,
    return_scores: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """Beam search for each source row, batched over sentences (B * beam decoding rows).

    Args:
        input_ids (B, S), attention_mask (B, S): right-padded sources (1 = real token; None: no padding).
        beam: K, the live hypotheses kept per sentence.
        length_penalty: alpha in score = (sum of log p of the hypothesis' tokens) / length ** alpha,
            length counting the eos (a hypothesis cut at the maximum length has no eos: its length is
            that maximum). 0 ranks by the raw log-probability; 1 by the mean per token.
        max_len_ratio, max_len_offset, max_len: the per-sentence maximum length (module docstring).
        early_stop: True: a sentence is done once it has ``beam`` finished hypotheses. False: it
            goes on until no live hypothesis can still beat the worst of the ``beam`` best finished
            ones (bound: the live log-probability can only fall, and its length lies between the
            next step and the maximum length), so the result is never worse than with True.
        return_scores: also return each sentence's best score.

    Each step (t = tokens generated): every live hypothesis is extended by every token; per sentence
    the 2K best extensions are taken best first. An extension that ends (eos, or t = the maximum
    length) is finished when it ranks among the top K of them (fairseq's and HF's rule: it would
    have been in the beam); the K best that do not end become the next beam (rows without a
    candidate are padded with score -inf). At the first step only one hypothesis (bos) is live.
    The result of a sentence is its best finished hypothesis by score.

    Returns the B best hypotheses (token ids without bos and eos), and with ``return_scores`` also
    their scores: (hypotheses, scores).
    """
    if not isinstance(beam, int) or isinstance(beam, bool) or beam < 1:
        raise ValueError(f"beam must be a positive int, got {beam!r}")
    src_mask = _check_inputs(input_ids, attention_mask)
    limits = max_target_lengths(model, input_ids, src_mask, max_len_ratio=max_len_ratio,
                                max_len_offset=max_len_offset, max_len=max_len)
    cfg, K, device = model.cfg, beam, input_ids.device
    B = input_ids.shape[0]
    neg_inf = float("-inf")
    with _eval_mode(model):
        memory_kv = model.cross_kv(model.encode(input_ids, src_mask))  # once per source: (B, H, S, Dh)
        rows = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,) the source of each row
        memory_kv = select_cache(memory_kv, rows)  # expanded to the beams: (B*K, H, S, Dh)
        row_mask = None if src_mask is None else src_mask.index_select(0, rows)  # (B*K, S)

        scores = torch.full((B, K), neg_inf, device=device)  # (B_a, K) log p of each live hypothesis
        scores[:, 0] = 0.0  # one live hypothesis (bos) at the start, so the beams do not repeat it
        history = torch.full((B * K, 1), cfg.bos_id, dtype=torch.long, device=device)  # (B_a*K, 1 + t)
        past = None
        active = list(range(B))  # the source row of each sentence still searching
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # (score, tokens)

        def done(b: int, t: int, live: list[tuple[int, int, float]]) -> bool:
            if t >= limits[b] or not live:
                return True
            if len(finished[b]) < K:
                return False
            if early_stop:
                return True
            worst_kept = sorted((s for s, _ in finished[b]), reverse=True)[K - 1]
            best_live = live[0][2]  # the best raw log p; its final length lies in [t + 1, limits[b]]
            bound = max(best_live / (t + 1) ** length_penalty, best_live / limits[b] ** length_penalty)
            return bound <= worst_kept

        for t in range(1, max(limits) + 1):  # t = tokens generated after this step
            logits, past = model.decode_step(history[:, -1:], memory_kv, row_mask, past)  # (B_a*K, 1, V)
            logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B_a*K, V)
            V = logp.shape[-1]
            cand = (scores.reshape(-1, 1) + logp).view(len(active), K * V)  # (B_a, K*V), index k * V + w
            top, idx = cand.topk(min(2 * K, K * V), dim=1)  # (B_a, 2K), best first
            top_s, top_k, top_w = top.tolist(), (idx // V).tolist(), (idx % V).tolist()

            parents: list[int] = []  # the row each next-step row continues
            tokens: list[int] = []
            new_scores: list[float] = []
            kept: list[int] = []  # indices into `active` of the sentences still searching
            for a, b in enumerate(active):
                live: list[tuple[int, int, float]] = []  # (parent row, token, log p), best first
                for r, (s, k, w) in enumerate(zip(top_s[a], top_k[a], top_w[a])):
                    if s == neg_inf:
                        break
                    row = a * K + k
                    if w == cfg.eos_id or t == limits[b]:
                        if r < K:
                            hyp = history[row, 1:].tolist() + ([] if w == cfg.eos_id else [w])
                            finished[b].append((s / t**length_penalty, hyp))
                    elif len(live) < K:
                        live.append((row, w, s))
                if done(b, t, live):
                    continue
                live += [(a * K, cfg.pad_id, neg_inf)] * (K - len(live))  # empty rows: never extended
                kept.append(a)
                for row, w, s in live:
                    parents.append(row)
                    tokens.append(w)
                    new_scores.append(s)
            if not kept:
                break
            index = torch.tensor(parents, device=device)  # (B_a'*K,)
            history = torch.cat([history.index_select(0, index),
                                 torch.tensor(tokens, device=device).unsqueeze(1)], dim=1)  # (B_a'*K, 1 + t)
            past = select_cache(past, index)
            if len(kept) < len(active):  # done sentences leave the batch
                block = torch.tensor([a * K + j for a in kept for j in range(K)], device=device)  # (B_a'*K,)
                memory_kv = select_cache(memory_kv, block)
                row_mask = None if row_mask is None else row_mask.index_select(0, block)
                active = [active[a] for a in kept]
            scores = torch.tensor(new_scores, device=device).view(len(active), K)  # (B_a', K)

        best = [max(f, key=lambda h: h[0]) for f in finished]
        hypotheses = [tokens for _, tokens in best]
        if return_scores:
            return hypotheses, [score for score, _ in best]
        return hypotheses
