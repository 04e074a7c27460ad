"""Does XLM pretraining help English -> Spanish translation? From scratch against XLM-initialised,
at the same translation budget; plus the time to translate 1,000 sentences with batched beam 5.

    python benchmarks/mt_xlm_init.py [--xlm CKPT | --xlm-steps 1500 --xlm-model xlm_small --xlm-seq-len 128]
        [--mt-steps 1500] [--val-every 500] [--lr 5e-4] [--beam 5] [--timed 1000] [--root DIR] [--quick]
        [key=value ...]

1. XLM: `experiment=xlm_mlm_tlm_en_es` (MLM on English and Spanish text, TLM on the WMT news +
   Tatoeba pairs; `--xlm-model`, e.g. xlm_small: 4 layers, d=256, or xlm_tiny: 2 layers, d=128) for
   `--xlm-steps` at `--xlm-seq-len` tokens per block, or an existing XLM `--xlm` .ckpt.
   Its cost (steps, wall seconds, tokens) is reported separately: it is not in the translation budget.
2. Both translation runs train the same network (the XLM's shapes, post-LN, its tokenizer and
   language embeddings; `experiment=mt_en_es` with those model keys) for `--mt-steps` on the same
   batches (same data, seed, LR `--lr`, warm-up, label smoothing, dropout); the only difference:
   `experiment=mt_en_es_from_xlm init_from=<XLM>` starts every block from the XLM (cross-attention
   fresh), the scratch run from random weights.
3. Scoring: each run's best checkpoint (by greedy val/bleu) translates the validation pairs (the
   pairs XLM pretraining held out, so the XLM never saw them) with beam `--beam`; sacreBLEU BLEU
   and chrF with their signatures. The greedy val/bleu curves are printed too.
4. Speed: the XLM-initialised model translates the first `--timed` English sentences of the LASER
   Tatoeba en-es set (excluded from all training data) with batched beam `--beam` and greedy
   decoding on this machine's CPU (threads as torch sets them), timed; BLEU against their Spanish side.

Ends with Markdown tables for RESULTS.md, the command line and
    DELTA bleu_xlm_minus_scratch <points>    DELTA chrf_xlm_minus_scratch <points>
    SPEED beam<k>_sent_per_s <value>
Outputs go to `--root` or a temp dir with their own paths.* (the user's outputs/, mlruns/ and cache
stay untouched); no MLflow logging.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import train_run


@dataclass
class Budget:
    xlm_steps: int
    mt_steps: int
    val_every: int
    timed: int
    overrides: tuple[str, ...] = ()  # extra overrides for every run (the quick test's shrinking)


DEFAULT = Budget(1500, 1500, 500, 1000)
QUICK = Budget(6, 6, 3, 20, ("debug=smoke",))
XLM_SHAPE = ("d_model", "n_layers", "n_heads", "d_ff", "max_seq_len")


def run(overrides: list[str], label: str) -> dict:
    """One training run: its final metrics, greedy val/bleu history and wall time."""
    m, points = train_run(overrides, label, "val/bleu")
    m["bleu_history"] = points
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {m['wall_s']:.0f} s; greedy val/bleu by step "
          f"{m['bleu_history']}", flush=True)
    return m


def read_pairs(src: Path, tgt: Path, n: int) -> tuple[list[str], list[str]]:
    """The first `n` line pairs of two aligned files where neither side is blank."""
    from lit_tf.lit.callbacks import read_lines

    pairs = [(s, t) for s, t in zip(read_lines(str(src), None), read_lines(str(tgt), None)) if s.strip() and t.strip()]
    return [s for s, _ in pairs[:n]], [t for _, t in pairs[:n]]


def perplexity(model, dm) -> float:
    """exp of the token-mean NLL over the validation batches (the checkpoint's own, recomputed)."""
    import math

    import torch

    from lit_tf.objectives.translation import TranslationObjective

    dm.setup()
    obj, total, n = TranslationObjective(label_smoothing=0.0), 0.0, 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            s, k = obj(model, batch).terms["mt"]
            total, n = total + float(s), n + int(k)
    return math.exp(total / max(n, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xlm", help="an XLM .ckpt written by train.py (skips the XLM pretraining)")
    ap.add_argument("--xlm-steps", type=int, help=f"XLM pretraining steps ({DEFAULT.xlm_steps})")
    ap.add_argument("--xlm-model", default="xlm_small", help="model config of the XLM (conf/model)")
    ap.add_argument("--xlm-seq-len", type=int, default=128, help="tokens per XLM block / TLM pair")
    ap.add_argument("--mt-steps", type=int, help=f"translation steps of each run ({DEFAULT.mt_steps})")
    ap.add_argument("--val-every", type=int, help=f"validate (greedy BLEU) every N steps ({DEFAULT.val_every})")
    ap.add_argument("--runs", nargs=2, metavar=("SCRATCH_CKPT", "XLM_INIT_CKPT"),
                    help="score these two translation checkpoints (with --xlm) instead of training them")
    ap.add_argument("--lr", type=float, default=5e-4, help="peak LR of both translation runs")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--timed", type=int, help=f"sentences translated in the speed test ({DEFAULT.timed})")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="tiny budgets (the test): a couple of minutes")
    ap.add_argument("--root", help="keep outputs here instead of a temp dir")
    ap.add_argument("overrides", nargs="*", help="key=value for both translation runs")
    a = ap.parse_args()
    base = QUICK if a.quick else DEFAULT
    budget = Budget(a.xlm_steps or base.xlm_steps, a.mt_steps or base.mt_steps, a.val_every or base.val_every,
                    a.timed or base.timed, base.overrides)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="mt_xlm_init_") as tmp:
        root = Path(a.root or tmp)
        root.mkdir(parents=True, exist_ok=True)
        report(a, budget, root)


def report(a: argparse.Namespace, budget: Budget, root: Path) -> None:
    import torch

    from lit_tf.data.tokenizer import PAD
    from lit_tf.lit.checkpoint import load_checkpoint
    from lit_tf.lit.translation import DecodeSettings, score, translate_texts

    shared = Path(os.environ.get("LIT_TF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    paths = [f"paths.cache_dir={root / 'cache'}", f"paths.log_dir={root / 'outputs'}",
             f"paths.mlruns_dir={root / 'mlruns'}", "logger=none", f"seed={a.seed}", *budget.overrides]
    # 1. the XLM
    xlm_cost = None
    if a.xlm:
        xlm_ckpt = a.xlm
    else:
        x = run([*paths, "experiment=xlm_mlm_tlm_en_es", f"model={a.xlm_model}", f"data.max_seq_len={a.xlm_seq_len}",
                 f"trainer.max_steps={budget.xlm_steps}",
                 f"trainer.val_check_interval={min(budget.val_every, budget.xlm_steps)}"], "XLM MLM+TLM")
        xlm_ckpt = x["last_ckpt"]
        xlm_cost = (budget.xlm_steps, x["wall_s"], float(x.get("train/tokens", float("nan"))))
    xlm = load_checkpoint(xlm_ckpt)
    shape = [f"model.{k}={getattr(xlm.model.cfg, k)}" for k in XLM_SHAPE]
    # 2. the two translation runs: the same network, data, batches and schedule
    common = [*paths, f"trainer.max_steps={budget.mt_steps}", f"trainer.val_check_interval={budget.val_every}",
              f"optim.optimizer.lr={a.lr}", *a.overrides]
    tok_file = root / "xlm_tokenizer.json"
    xlm.tokenizer.save(str(tok_file))
    if a.runs:  # already trained: score them
        scratch, warm = ({"best_ckpt": c, "wall_s": float("nan"), "bleu_history": []} for c in a.runs)
    else:
        scratch = run([*common, "experiment=mt_en_es", "name=mt_scratch", "model.pre_ln=false",
                       f"model.n_decoder_layers={xlm.model.cfg.n_layers}", *shape,
                       f"+model.layer_norm_eps={xlm.model.cfg.layer_norm_eps}", f"data.tokenizer.path={tok_file}"],
                      "scratch")
        warm = run([*common, "experiment=mt_en_es_from_xlm", "name=mt_from_xlm", f"init_from={xlm_ckpt}"], "from XLM")

    # 3. beam search on the validation pairs with each best checkpoint
    from lit_tf.cli.train import compose_config
    from lit_tf.data.datamodule import build_datamodule
    from lit_tf.lit.recipes import run_configs

    cfg = compose_config([*common, "experiment=mt_en_es"])
    objective, data, _ = run_configs(cfg)
    from lit_tf.data.tokenizer import materialize_tokenizer

    # both runs read the XLM's vocabulary: so does the perplexity here
    dm = build_datamodule(data, objective, "parallel", cache_dir=str(root / "cache"), seed=a.seed,
                          tokenizer=materialize_tokenizer(xlm.tokenizer.to_str(), root / "cache" / "tokenizers"))
    sources, references = dm.val_texts()
    beam = DecodeSettings(beam=a.beam)
    rows = {}
    ppl = {}
    for name, m in (("from scratch", scratch), ("from XLM", warm)):
        loaded = load_checkpoint(m.get("best_ckpt") or m["last_ckpt"])
        model = loaded.model.eval()
        ppl[name] = perplexity(model, dm)
        t0 = time.perf_counter()
        hyps = translate_texts(model, loaded.tokenizer, sources, beam)
        rows[name] = (m, score(hyps, references), time.perf_counter() - t0, loaded)
    # 4. speed: batched beam and greedy on sentences outside all training data
    laser = shared / "tatoeba_laser"
    src, ref = read_pairs(laser / "tatoeba.spa-eng.eng", laser / "tatoeba.spa-eng.spa", budget.timed)
    _, _, _, loaded = rows["from XLM"]
    model = loaded.model.eval()
    translate_texts(model, loaded.tokenizer, src[:32], beam)  # warm-up
    speed = {}
    for k in (a.beam, 1):
        t0 = time.perf_counter()
        hyps = translate_texts(model, loaded.tokenizer, src, DecodeSettings(beam=k))
        speed[k] = (time.perf_counter() - t0, score(hyps, ref))

    print(f"\nXLM: {xlm_ckpt}" + (f" ({xlm_cost[0]} steps, {xlm_cost[1]:.0f} s wall, {xlm_cost[2]:.3g} tokens)"
                                  if xlm_cost else " (given)"))
    print(f"network (both runs): {xlm.model.cfg.n_layers}+{xlm.model.cfg.n_layers} layers, d_model "
          f"{xlm.model.cfg.d_model}, {xlm.model.cfg.n_heads} heads, d_ff {xlm.model.cfg.d_ff}, post-LN, vocabulary "
          f"{xlm.model.cfg.vocab_size} (the XLM's), pad {xlm.tokenizer.token_to_id(PAD)}")
    what = "given checkpoints" if a.runs else f"{budget.mt_steps} steps each, LR {a.lr}, seed {a.seed}"
    print(f"translation budget: {what}; validation pairs: {len(sources)} (XLM's held-out en-es pairs)")
    print(f"\n| init | params | train s | greedy val/bleu by step | BLEU (beam {a.beam}) | chrF (beam {a.beam}) | val ppl |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (m, s, _, loaded) in rows.items():
        curve = ", ".join(f"{st}: {b:.2f}" for st, b in m["bleu_history"]) or "-"
        print(f"| {name} | {loaded.model.num_parameters() / 1e6:.2f}M | {m['wall_s']:.0f} | {curve} | {s.bleu:.2f} "
              f"| {s.chrf:.2f} | {ppl[name]:.2f} |")
    print(f"\nsignatures: {rows['from XLM'][1].bleu_signature}; {rows['from XLM'][1].chrf_signature}")
    print(f"\n| decoding ({len(src)} Tatoeba sentences, {torch.get_num_threads()} threads) | seconds | sentences/s "
          "| BLEU | chrF |")
    print("| --- | --- | --- | --- | --- |")
    for k, (secs, s) in speed.items():
        print(f"| {'greedy' if k == 1 else f'beam {k}'} | {secs:.1f} | {len(src) / secs:.1f} | {s.bleu:.2f} | {s.chrf:.2f} |")
    print(f"\ncommand: python benchmarks/mt_xlm_init.py {shlex.join(sys.argv[1:])}".rstrip())
    d_bleu = rows["from XLM"][1].bleu - rows["from scratch"][1].bleu
    d_chrf = rows["from XLM"][1].chrf - rows["from scratch"][1].chrf
    print(f"DELTA bleu_xlm_minus_scratch {d_bleu:+.2f}")
    print(f"DELTA chrf_xlm_minus_scratch {d_chrf:+.2f}")
    print(f"SPEED beam{a.beam}_sent_per_s {len(src) / speed[a.beam][0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
