"""Training throughput of lit_tf side by side with a reference, in one invocation.

    python benchmarks/throughput.py --family bert|gpt|xlm --vs hf|loop|nolog|levers|malloc [--steps N] [--rounds R]
                                    [--warmup W] [key=value ...]

Both sides train the same model shape on the same data with the same batch size, sequence length,
optimizer (AdamW, fused kernel) and gradient clipping, in fp32 on whatever device torch uses by
default here (CPU). Sides alternate (ours, reference, ours, reference, ...) for `--rounds` rounds;
each run's figure is real (non-padding) tokens per second from the end of step `--warmup` to the
end of the last step, so set-up (data, model, compilation) and warm-up are left out. The median of
the rounds is reported; the last lines read `RATIO <name> <ours / reference>` (higher is better for us).
MFU (`--vs hf|loop|nolog`, CPU) is lit_tf's median tokens/s times the model's FLOPs per token over
the median fp32 matmul peak that each timed lit_tf process measured right after its steps (the
probe of `lit_tf.lit.perf`), so both figures come from the same machine state.
Every run is a fresh process (spawned), as a user's run is: no side inherits the other's allocator
state, threads or caches. lit_tf's runs (and the bare loop) get the malloc `python train.py` picks
(`lit_tf/allocator.py`: tcmalloc when installed; `LIT_TF_ALLOCATOR=system` turns it off), HF's side
the system's, as `python run_mlm.py` would; `--vs levers` measures the allocator as one lever.

References (`--vs`):
  hf      HF `transformers` Trainer with the HF model of the same shape (BertForMaskedLM,
          GPT2LMHeadModel, XLMWithLMHeadModel), HF's own data collator for BERT/GPT (the same packed
          token blocks from lit_tf's shards), and for XLM lit_tf's MLM + TLM batches (HF has no TLM
          collator) with one forward per stream, as lit_tf does.
  loop    a bare PyTorch loop over the same lit_tf model, objective, batches, optimizer, LR schedule
          and clipping: what Lightning and lit_tf's callbacks cost (ratio 0.97 = 3% overhead).
  nolog   lit_tf with `logger=none`: what MLflow logging at the default interval costs.
  levers  lit_tf with each speed switch turned off in turn (`speed.*`, `optim.optimizer.fused`,
          the allocator), `speed.compile=true` turned on: what each one buys.
  malloc  lit_tf once with each installed allocator and the system's: tokens/s and resident memory
          over the run (`--steps 400` shows whether memory stays flat); `RSS_GROWTH` lines give the
          last step's RSS over the first timed step's.

Workloads (the issue's): BERT-mini MLM (4x256, 4 heads, d_ff 1024, seq 128, batch 32, packed
blocks), GPT (4x256, 4 heads, d_ff 1024, seq 256, batch 16, byte-level BPE), XLM MLM+TLM (4x256,
seq 128, batch 32 per stream); 16k vocabularies; English = WikiText-2 valid + Tiny Shakespeare.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_tf import allocator
from lit_tf.cli.train import compose_config, train
from lit_tf.lit.recipes import build_pretraining

WORKLOADS = {
    "bert": ["model=bert_mini", "model.max_seq_len=128", "objective=mlm", "data=english",
             "data.tokenizer.vocab_size=16000", "data.max_seq_len=128", "data.batch_size=32"],
    "gpt": ["experiment=gpt_clm_en", "model.d_model=256", "model.n_layers=4", "model.n_heads=4", "model.d_ff=1024",
            "model.max_seq_len=256", "data.tokenizer.vocab_size=16000", "data.max_seq_len=256", "data.batch_size=16"],
    "xlm": ["experiment=xlm_mlm_tlm_en_es", "model.max_seq_len=128", "data.max_seq_len=128", "data.batch_size=32",
            "data.tokenizer.vocab_size=16000"],
}
# lever -> the override that turns it off (compile: on)
LEVERS = {
    "fast_dropout": "speed.fast_dropout=false",
    "cpu_attention": "speed.attention=sdpa",
    "fused_lm_loss": "speed.fused_lm_loss=false",
    "fused_adamw": "optim.optimizer.fused=false",
    "allocator": f"{allocator.ENV}=system",  # an environment variable, not an override (see `isolated`)
    "compile": "speed.compile=true",
}


def _tokens(batch) -> torch.Tensor:
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    return sum(sub["attention_mask"].sum() for sub in batch.values() if isinstance(sub, dict))


def _rate(times: list[float], tokens: list[float], warmup: int) -> float:
    """Tokens per second from the end of step `warmup` to the end of the last step."""
    if len(times) <= warmup + 1:
        raise RuntimeError(f"only {len(times)} steps ran; need more than --warmup {warmup}")
    return sum(tokens[warmup + 1 :]) / (times[-1] - times[warmup])


# ----------------------------------------------------------------------------- lit_tf
class StepClock:
    """End time, real tokens (summed once, at the end) and, with `rss`, the process's resident
    memory (MB) of every training step."""

    def __init__(self, rss: bool = False) -> None:
        import lightning as L
        import psutil

        clock, proc = self, psutil.Process()

        class _CB(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                clock.times.append(time.perf_counter())
                clock._tokens.append(_tokens(batch))
                if rss:
                    clock.rss_mb.append(proc.memory_info().rss / 2**20)

        self.callback = _CB()
        self.times: list[float] = []
        self._tokens: list[torch.Tensor] = []
        self.rss_mb: list[float] = []

    @property
    def tokens(self) -> list[float]:
        return [float(t) for t in self._tokens]


def config(family: str, root: Path, steps: int, extra: list[str]):
    return compose_config([
        *WORKLOADS[family], "logger=none", "callbacks=none", f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=0", "trainer.enable_model_summary=false",
        "+trainer.enable_progress_bar=false", f"paths.log_dir={root / 'outputs'}", f"paths.mlruns_dir={root / 'mlruns'}",
        f"paths.cache_dir={root / 'cache'}", *extra,
    ])


def run_ours(family: str, root: Path, steps: int, warmup: int, extra: list[str], rss: bool = False
             ) -> tuple[float, float | None, list[float]]:
    """(tokens/s, the CPU's matmul peak measured in this process right after the timed steps (None
    on GPU), RSS in MB after every step (with `rss`, else empty)) of one lit_tf run."""
    from lit_tf.lit.perf import probe_cpu_peak_flops

    clock = StepClock(rss)
    train(config(family, root, steps, extra), callbacks=[clock.callback])
    rate = _rate(clock.times, clock.tokens, warmup)
    return rate, (None if torch.cuda.is_available() else probe_cpu_peak_flops()), clock.rss_mb


# ----------------------------------------------------------------------------- bare loop
def run_loop(family: str, root: Path, steps: int, warmup: int, extra: list[str]) -> float:
    """The same model, objective, batches, optimizer, schedule and clipping; no Lightning."""
    import hydra

    from lit_tf.lit.optim import build_optimizer
    from lit_tf.models.layers import set_kernels

    cfg = config(family, root, steps, extra)
    torch.manual_seed(int(cfg.seed))
    set_kernels(fast_dropout=bool(cfg.speed.fast_dropout), attention=str(cfg.speed.attention))
    b = build_pretraining(cfg)
    b.datamodule.max_steps = int(cfg.trainer.max_steps)  # no trainer attached: the stream's length
    b.datamodule.setup("fit")
    model, objective = b.model, b.objective
    holder = torch.nn.ModuleDict({"model": model, **({"objective": objective} if isinstance(objective, torch.nn.Module) else {})})
    opt = build_optimizer(holder, hydra.utils.instantiate(b.optim.optimizer), b.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, b.optim.lr_lambda(steps))
    params = [p for g in opt.param_groups for p in g["params"]]
    clip = float(cfg.trainer.gradient_clip_val)
    holder.train()
    times, tokens = [], []
    for step, batch in enumerate(b.datamodule.train_dataloader()):
        if step >= steps:
            break
        loss = objective(model, batch, step=step).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
        tokens.append(_tokens(batch))
    return _rate(times, [float(t) for t in tokens], warmup)


# ----------------------------------------------------------------------------- HF Trainer
def _hf_model(family: str, model_cfg):
    import transformers

    from lit_tf.models.hf import config_to_hf

    d = config_to_hf(family, model_cfg)
    if family == "bert":
        return transformers.BertForMaskedLM(transformers.BertConfig(**d))
    if family == "gpt":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**d))
    return transformers.XLMWithLMHeadModel(transformers.XLMConfig(**d))


def run_hf(family: str, root: Path, steps: int, warmup: int, extra: list[str]) -> float:
    import transformers

    from lit_tf.data.tokenizer import CLS, MASK, PAD, SEP, UNK

    cfg = config(family, root, steps, extra)
    b = build_pretraining(cfg)
    dm = b.datamodule
    dm.max_steps = int(cfg.trainer.max_steps)  # no trainer attached: the stream's length
    dm.setup("fit")
    bsz = int(cfg.data.batch_size)
    times: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    if family == "xlm":  # lit_tf's own MLM + TLM batches, one forward per stream
        it = iter(dm.train_dataloader())
        batches = [next(it) for _ in range(steps)]
        tokens = [float(_tokens(x)) for x in batches]
        data, collate, per_device = batches, (lambda items: items[0]), 1
        weights = dict(cfg.objective.weights)

        class XLMTrainer(transformers.Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                loss = 0.0
                for sub in inputs.values():
                    out = model(input_ids=sub["input_ids"], langs=sub["lang_ids"], attention_mask=sub["attention_mask"],
                                position_ids=sub["position_ids"], labels=sub["mlm_labels"])
                    loss = loss + float(weights.get(sub["term"], 1.0)) * out.loss
                return loss

        trainer_cls = XLMTrainer
    else:  # the same packed blocks, HF's own collator (dynamic masking for BERT, the shift for GPT)
        perm = torch.randperm(len(dm.train_set), generator=torch.Generator().manual_seed(0))[: steps * bsz]
        data = [{"input_ids": dm.train_set[int(i)]["input_ids"].tolist()} for i in perm]
        tok = transformers.PreTrainedTokenizerFast(tokenizer_object=dm.tokenizer.tokenizer, pad_token=PAD,
                                                   mask_token=MASK, cls_token=CLS, sep_token=SEP, unk_token=UNK)
        collate = transformers.DataCollatorForLanguageModeling(tok, mlm=family == "bert", mlm_probability=0.15)
        tokens = [float(sum(len(x["input_ids"]) for x in data[i * bsz : (i + 1) * bsz])) for i in range(steps)]
        per_device, trainer_cls = bsz, transformers.Trainer

    model = _hf_model(family, b.model.cfg)
    optim = b.optim
    opt = optim.optimizer
    args = transformers.TrainingArguments(
        output_dir=str(root / "hf"), max_steps=steps, per_device_train_batch_size=per_device,
        learning_rate=float(opt["lr"]), weight_decay=optim.weight_decay, adam_beta1=float(opt["betas"][0]),
        adam_beta2=float(opt["betas"][1]), adam_epsilon=float(opt["eps"]), warmup_steps=warmup_steps(optim, steps),
        lr_scheduler_type=optim.schedule, max_grad_norm=float(cfg.trainer.gradient_clip_val),
        optim="adamw_torch_fused" if opt.get("fused") else "adamw_torch", use_cpu=not torch.cuda.is_available(),
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, seed=int(cfg.seed),
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=data, data_collator=collate,
                          callbacks=[Clock()])
    trainer.train()
    return _rate(times, tokens, warmup)


def warmup_steps(optim, steps: int) -> int:
    """Warmup steps of a run of `steps` steps under `optim` (a lit_tf.lit.optim.OptimConfig)."""
    from lit_tf.lit.optim import warmup_steps_for

    return warmup_steps_for(steps, optim.warmup_steps, optim.warmup_ratio)


# ----------------------------------------------------------------------------- driver
def isolated(fn: Callable[..., Any], *args, malloc: str = "auto") -> Any:
    """fn(*args) in a fresh spawned process (a module-level function, so it pickles by name), with
    the allocator `malloc` preloaded as train.py would ("system": none, as for HF's side)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(allocator.child_env(malloc, saved))
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# the matmul peak each timed lit_tf process measured right after its steps: MFU is taken against
# the machine's state during the runs (on the 2-core VM the probe moved between 322 and 441
# GFLOP/s over a day, and a peak cached at data-preparation time could be from another state)
PEAKS: list[float] = []


def ours(family: str, root: Path, steps: int, warmup: int, extra: list[str]) -> float:
    """lit_tf as `python train.py` runs it: its allocator choice (`LIT_TF_ALLOCATOR`) applies."""
    env_flags = dict(x.split("=", 1) for x in extra if x.startswith(allocator.ENV + "="))
    overrides = [x for x in extra if not x.startswith(allocator.ENV + "=")]
    rate, peak, _ = isolated(run_ours, family, root, steps, warmup, overrides,
                             malloc=env_flags.get(allocator.ENV, allocator.wanted()))
    if peak is not None:
        PEAKS.append(peak)
    return rate


def malloc_table(family: str, root: Path, steps: int, warmup: int, extra: list[str]) -> list[tuple[str, float]]:
    """--vs malloc: one lit_tf run per installed allocator (and the system's); tokens/s and RSS over
    the steps. Returns the RATIO lines (each allocator's tokens/s over the system's)."""
    kinds = ["system", *(k for k in ("tcmalloc", "jemalloc") if allocator.find(k))]
    marks = sorted({warmup, steps // 4, steps // 2, steps - 1})
    results = {k: isolated(run_ours, family, root, steps, warmup, extra, True, malloc=k)[::2] for k in kinds}
    head = "".join(f" {'RSS MB @' + str(m + 1):>13}" for m in marks)
    print(f"\n{'malloc':<10} {'tokens/s':>10}{head} {'growth':>7}")
    out = []
    for k, (rate, rss) in results.items():
        growth = rss[-1] / rss[warmup]
        print(f"{k:<10} {rate:>10,.0f}" + "".join(f" {rss[m]:>13,.0f}" for m in marks) + f" {growth:>6.2f}x")
        out.append((f"RSS_GROWTH {family}_{k}", growth))
        if k != "system":
            out.append((f"RATIO {family}_malloc_{k}_vs_system", rate / results["system"][0]))
    return out


def paired(name: str, ours: Callable[[], float], ref: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Alternate ours and the reference for `rounds` rounds; (median ours, median reference)."""
    a, b = [], []
    for r in range(rounds):
        a.append(ours())
        b.append(ref())
        print(f"  round {r + 1}: {name}: ours {a[-1]:,.0f} tokens/s, reference {b[-1]:,.0f} tokens/s", flush=True)
    return statistics.median(a), statistics.median(b)


def mfu_of(family: str, root: Path, steps: int, tokens_per_s: float, extra: list[str]) -> tuple[float | None, str]:
    """MFU of `tokens_per_s` against the median matmul peak the timed lit_tf processes measured."""
    from lit_tf.lit.build import model_config
    from lit_tf.lit.perf import flops_per_token

    cfg = config(family, root, steps, extra)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    vocab = int(cfg.data.tokenizer.vocab_size)
    fam, mcfg = model_config(model_cfg, vocab)
    fpt = flops_per_token(fam, mcfg, OmegaConf.to_container(cfg.objective, resolve=True), int(cfg.data.max_seq_len))
    if not PEAKS:
        return None, "GPU: see the run's perf/mfu"
    peak = statistics.median(PEAKS)
    seen = ", ".join(f"{p / 1e9:.0f}" for p in PEAKS)
    return tokens_per_s * fpt / peak, (f"{fpt / 1e6:.1f} MFLOP/token, peak {peak / 1e9:.0f} GFLOP/s: the median of the "
                                       f"matmul probes run in the timed lit_tf processes after their steps ({seen})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(WORKLOADS), required=True)
    ap.add_argument("--vs", choices=("hf", "loop", "nolog", "levers", "malloc"), default="hf")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per run (after --warmup)")
    ap.add_argument("--warmup", type=int, default=10, help="steps left out at the start of every run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--levers", default=",".join(LEVERS), help="--vs levers: which ones (comma separated)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for both sides")
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 2:
        ap.error("need --rounds >= 1 and --steps >= 2")
    fam, steps, warm, extra = args.family, args.steps + args.warmup, args.warmup, list(args.overrides)
    print(f"lit_tf throughput: family={fam} vs={args.vs} steps={args.steps} (+{warm} warm-up) rounds={args.rounds} "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="lit_tf_bench_") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        train(config(fam, root, 2, extra))  # tokenizer and shards once, outside every timing
        print(f"  data prepared in {time.perf_counter() - t:.0f}s", flush=True)
        ratios: list[tuple[str, float]] = []
        rows: list[tuple[str, float, float]] = []
        ours_fn = lambda x=(): ours(fam, root, steps, warm, extra + list(x))  # noqa: E731
        if args.vs == "malloc":
            for name, value in malloc_table(fam, root, steps, warm, extra):
                print(f"{name} {value:.3f}")
            return
        if args.vs == "levers":
            for lever in [x for x in args.levers.split(",") if x]:
                flip = LEVERS[lever]
                on, off = paired(lever, ours_fn, lambda f=flip: ours_fn([f]), args.rounds)
                rows.append((f"{lever} ({flip})", on, off))
                ratios.append((f"{fam}_lever_{lever}", on / off))
        else:
            ref = {"hf": lambda: isolated(run_hf, fam, root, steps, warm, extra, malloc="system"),
                   "loop": lambda: isolated(run_loop, fam, root, steps, warm, extra, malloc=allocator.wanted()),
                   "nolog": lambda: ours_fn(["logger=none"])}[args.vs]
            mine = (lambda: ours_fn(["logger=mlflow"])) if args.vs == "nolog" else ours_fn
            on, off = paired(args.vs, mine, ref, args.rounds)
            rows.append((args.vs, on, off))
            ratios.append((f"{fam}_vs_{args.vs}", on / off))
        print(f"\n{'comparison':<44} {'lit_tf tokens/s':>16} {'reference tokens/s':>19} {'ratio':>7}")
        for name, on, off in rows:
            print(f"{name:<44} {on:>16,.0f} {off:>19,.0f} {on / off:>6.2f}x")
        if args.vs != "levers":
            mfu, basis = mfu_of(fam, root, steps, rows[0][1], extra)
            if mfu is not None:
                print(f"\nlit_tf MFU {100 * mfu:.1f}% ({basis})")
                print(f"MFU {fam} {mfu:.3f}")
        for name, value in ratios:
            print(f"RATIO {name} {value:.3f}")


if __name__ == "__main__":
    from lit_tf.errors import user_errors

    with user_errors():  # bad input (e.g. no shared data) reads as one line, as with train.py
        main()
