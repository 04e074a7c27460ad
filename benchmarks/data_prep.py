"""Data preparation at scale: lit_tf's sharding vs HF `datasets.map`, and flat training memory.

    python benchmarks/data_prep.py [--mb 200] [--rounds 2] [--workers N] [--skip-memory]
    python benchmarks/data_prep.py --encode-only [--mb 10] [--rounds 3]

Corpus: the shared English text (WikiText-2 valid raw + Tiny Shakespeare, 2.3 MB) repeated into
one ~`--mb` MB file in a temporary folder. A WordPiece tokenizer (vocab 16,000, the `data=files`
defaults otherwise: uncased, min_frequency 2) is trained once with lit_tf's own
`get_or_train_tokenizer` on the 1x text; its training time is printed apart and not compared.

Part 1, speed. Each side runs in its own subprocess, alternating (ours, hf, ours, hf, ...), and
each round starts from an empty cache:
- ours: `text.fingerprint` + `build_or_load_shards` (what `PretrainDataModule.prepare` runs):
  documents from `text.iter_documents`, token ids + word-start flags, 5% of documents held out,
  written as shards (encoder worker processes: `--workers`, default as lit_tf's default).
- hf: `datasets.load_dataset("text", ...)` + `.map(batched=True, num_proc=2)` calling
  `PreTrainedTokenizerFast` (wrapping the same `tokenizers` object) for `input_ids` only (no
  attention mask, token types or word ids: the least work HF can do), written to its Arrow cache.
Times are measured inside each subprocess around the work (imports and interpreter start-up
excluded). Peak memory is that of the whole process tree (the side's process and its workers):
the sum of their RSS sampled every 50 ms with psutil (shared pages, e.g. libraries, count once
per process, so this overstates slightly); `ru_maxrss` of the largest single process is shown
beside it. After the rounds, the id streams of both sides are compared over the whole corpus
(ours reassembled in document order from the train and val shards; HF's lines concatenated).

Part 2, memory (skip with `--skip-memory`): shards for the 1x corpus and a 10x one (the 1x
text repeated), then in a fresh subprocess each, 100 MLM steps of `model=bert_tiny` through
`lit_tf.cli.train.train` (same tokenizer file), after a 1-step run in another process that builds
the shards. Reported: the training process's `ru_maxrss` and the 10x/1x ratio.

`--encode-only`: instead of parts 1 and 2, the encoding step alone, in this process on one
encoding thread: the corpus's sentences in `write_shards`' batches through `encode_flat` (several
sentences per `Encoding` when the tokenizer allows) and through `_encode_each` (one `Encoding` per
sentence), alternating, `--rounds` times each; CPU time (`time.process_time`, less disturbed by
other load than wall time) is compared. Ends with `ENCODE_SPEEDUP <each CPU / encode_flat CPU>`.

Ends with `RATIO data_prep <ours speed / hf speed>`, `PEAK_RSS_MB data_prep <ours>` and
`RSS_GROWTH_10X <ratio>`. Everything is written under one temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIT_TF_SHARED_DATA", ROOT.parent / "shared" / "data"))
BASE_FILES = ("wikitext2/wiki.valid.raw", "tinyshakespeare/input.txt")
VAL_FRACTION = 0.05
VOCAB = 16000
HF_NUM_PROC = 2


# --------------------------------------------------------------------------------------------
# children: one side's work in a fresh process; the last stdout line is `RESULT <json>`
# --------------------------------------------------------------------------------------------
def _cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def _rusage_mb() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"maxrss_self_mb": me, "maxrss_children_mb": kids}


def child_ours(a: dict) -> dict:
    from lit_tf.data import text
    from lit_tf.data.shards import TokenShard, build_or_load_shards
    from lit_tf.data.tokenizer import TokenizerArtifact

    tok = TokenizerArtifact.load(a["tokenizer"])
    src = {"files": [a["corpus"]], "text_field": "text", "doc_per_line": False}
    t0, c0 = time.perf_counter(), _cpu_s()
    root = build_or_load_shards("bench", text.fingerprint(src), lambda: text.iter_documents(src), tok, a["cache"],
                                val_fraction=VAL_FRACTION, workers=a["workers"])
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    n = sum(len(TokenShard.open(root / s)) for s in ("train", "val"))
    return {"seconds": seconds, "cpu_s": cpu, "tokens": n, "out": str(root), **_rusage_mb()}


def child_hf(a: dict) -> dict:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    from transformers import PreTrainedTokenizerFast

    from lit_tf.data.tokenizer import TokenizerArtifact

    datasets.disable_progress_bars()
    fast = PreTrainedTokenizerFast(tokenizer_object=TokenizerArtifact.load(a["tokenizer"]).tokenizer)

    def encode(batch):
        enc = fast(batch["text"], add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        return {"input_ids": enc["input_ids"]}

    t0, c0 = time.perf_counter(), _cpu_s()
    ds = datasets.load_dataset("text", data_files=[a["corpus"]], split="train", cache_dir=a["cache"])
    out = ds.map(encode, batched=True, num_proc=HF_NUM_PROC, remove_columns=["text"], load_from_cache_file=False)
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    col = out.data.column("input_ids")
    n = sum(len(c.flatten()) for c in col.chunks)
    return {"seconds": seconds, "cpu_s": cpu, "tokens": n, "out": [f["filename"] for f in out.cache_files], **_rusage_mb()}


def child_train(a: dict) -> dict:
    from lit_tf.cli.train import compose_config, train

    cfg = compose_config(a["overrides"])
    t0 = time.perf_counter()
    metrics = train(cfg)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "val_mlm_loss": float(metrics.get("val/mlm_loss", float("nan"))), **_rusage_mb()}


CHILDREN = {"ours": child_ours, "hf": child_hf, "train": child_train}


def child_main(kind: str, args_json: str) -> None:
    result = CHILDREN[kind](json.loads(args_json))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
def run_child(kind: str, args: dict, env: dict) -> dict:
    """Run a child; return its RESULT plus the peak RSS sum of its process tree (sampled)."""
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, "_child", kind, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(err[-6000:] + out[-2000:])
        raise SystemExit(f"child {kind} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT "):])
    result["tree_peak_rss_mb"] = peak / 2**20
    return result


def write_corpus(path: Path, copies: int) -> int:
    base = "".join((SHARED / f).read_text(encoding="utf-8").rstrip("\n") + "\n\n" for f in BASE_FILES)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for _ in range(copies):
            f.write(base)
    return path.stat().st_size


def check_same_ids(ours_root: Path, hf_files: list[str]) -> tuple[bool, int, str]:
    """Our id stream in document order (train and val shards interleaved back by the hold-out
    rule) against HF's, whole corpus. Returns (equal, tokens compared, detail)."""
    import numpy as np
    import pyarrow as pa

    from lit_tf.data.shards import TokenShard, _is_val_doc

    hf = []
    for f in hf_files:
        with pa.memory_map(f) as src:
            table = pa.ipc.open_stream(src).read_all()
        hf.extend(c.flatten().to_numpy(zero_copy_only=False) for c in table.column("input_ids").chunks)
    hf_ids = np.concatenate(hf).astype(np.int64)
    parts = {s: TokenShard.open(ours_root / s) for s in ("train", "val")}
    n_docs = sum(p.meta["n_documents"] for p in parts.values())
    is_val = np.fromiter((_is_val_doc(i, VAL_FRACTION) for i in range(n_docs)), dtype=bool, count=n_docs)
    if int(is_val.sum()) != parts["val"].meta["n_documents"]:
        return False, 0, "hold-out count differs (a document tokenized to nothing?)"
    bounds = {s: p.doc_token_bounds for s, p in parts.items()}
    change = np.flatnonzero(np.diff(is_val.astype(np.int8))) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [n_docs]])
    pos, seen = 0, {"train": 0, "val": 0}
    for a, b in zip(starts, ends):
        split = "val" if is_val[a] else "train"
        d0, d1 = seen[split], seen[split] + (b - a)
        seen[split] = d1
        t0, t1 = bounds[split][d0], bounds[split][d1]
        chunk = np.asarray(parts[split].tokens[t0:t1], dtype=np.int64)
        if not np.array_equal(chunk, hf_ids[pos:pos + len(chunk)]):
            return False, pos, f"streams differ in documents {a}..{b} (token {pos})"
        pos += len(chunk)
    if pos != len(hf_ids):
        return False, pos, f"ours has {pos} tokens, hf {len(hf_ids)}"
    return True, pos, "whole corpus"


def encode_cost(corpus: Path, tok, rounds: int) -> float:
    """`--encode-only`: CPU seconds of `encode_flat` vs one `Encoding` per sentence (see the module
    docstring); prints both and returns the speed-up."""
    from lit_tf.data import shards, text
    from lit_tf.data.tokenizer import _encode_each, encode_flat, joinable

    src = {"files": [str(corpus)], "text_field": "text", "doc_per_line": False}
    batches = [[s for doc in b for s in doc]
               for b in shards._batched(text.iter_documents(src), shards._ENCODE_BATCH_SENTENCES)]
    encoder = shards._without_post_processor(tok.tokenizer)
    dtype = shards.token_dtype(tok.vocab_size)
    n_sents = sum(map(len, batches))
    print(f"encode only: {n_sents:,} sentences in {len(batches)} batches, joinable={joinable(encoder)}, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS')}")
    cpu: dict[str, list[float]] = {"each": [], "encode_flat": []}
    for r in range(rounds):
        for name, fn in (("each", _encode_each), ("encode_flat", encode_flat)):
            c0 = time.process_time()
            n_tok = sum(len(fn(encoder, b, dtype)[0]) for b in batches)
            cpu[name].append(time.process_time() - c0)
            print(f"  round {r + 1} {name:11s}: CPU {cpu[name][-1]:.2f}s, {n_tok:,} tokens", flush=True)
    each, flat = statistics.median(cpu["each"]), statistics.median(cpu["encode_flat"])
    print(f"median CPU: one Encoding per sentence {each:.2f}s, encode_flat {flat:.2f}s")
    return each / flat


def fmt_table(rows: list[list], header: list[str]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200, help="corpus size in MB (default 200)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (median reported)")
    ap.add_argument("--workers", type=int, default=None, help="lit_tf encoder processes (default: lit_tf's default)")
    ap.add_argument("--steps", type=int, default=100, help="training steps per run in the memory part")
    ap.add_argument("--skip-memory", action="store_true", help="skip part 2 (training memory, 1x vs 10x)")
    ap.add_argument("--encode-only", action="store_true",
                    help="only the encoding step, in-process: encode_flat vs one Encoding per sentence (CPU time)")
    args = ap.parse_args()
    if args.encode_only:  # one encoding thread: CPU time compares like with like, and the machine stays free
        os.environ["RAYON_NUM_THREADS"] = "1"
    for f in BASE_FILES:
        if not (SHARED / f).is_file():
            raise SystemExit(f"missing shared data file {SHARED / f} (set LIT_TF_SHARED_DATA)")

    from lit_tf import allocator

    tmp = Path(tempfile.mkdtemp(prefix="lit_tf_data_prep_"))
    env = dict(os.environ, HF_HOME=str(tmp / "hf_home"), HF_DATASETS_CACHE=str(tmp / "hf_home" / "datasets"),
               LIT_TF_CACHE=str(tmp / "lit_tf_cache"), PYTHONUNBUFFERED="1")
    # lit_tf's side runs with the malloc train.py would pick (tcmalloc when installed), HF's with the system's
    envs = {"ours": allocator.child_env(allocator.wanted(), env), "hf": allocator.child_env("system", env)}
    try:
        from lit_tf.data import text
        from lit_tf.data.tokenizer import TokenizerSpec, get_or_train_tokenizer

        base_bytes = sum((SHARED / f).stat().st_size for f in BASE_FILES)
        copies = max(1, round(args.mb * 1e6 / base_bytes))
        corpus = tmp / "corpus.txt"
        nbytes = write_corpus(corpus, copies)
        one = tmp / "corpus_1x.txt"
        write_corpus(one, 1)
        src1 = {"files": [str(one)], "text_field": "text", "doc_per_line": False}
        spec = TokenizerSpec(kind="wordpiece", vocab_size=VOCAB, lowercase=True, min_frequency=2)
        t0 = time.perf_counter()
        tok = get_or_train_tokenizer(spec, lambda: text.iter_documents(src1), text.fingerprint(src1), tmp / "tokenizer")
        t_tok = time.perf_counter() - t0
        print(f"corpus: {nbytes / 1e6:.1f} MB ({copies} copies of {' + '.join(BASE_FILES)}), {os.cpu_count()} CPUs")
        print(f"tokenizer: wordpiece vocab {tok.vocab_size}, trained on the 1x text ({base_bytes / 1e6:.2f} MB) "
              f"in {t_tok:.1f}s (not part of the comparison)")

        if args.encode_only:
            print(f"ENCODE_SPEEDUP {encode_cost(corpus, tok, args.rounds):.3f}")
            return

        # ---------------------------------------------------------------- part 1: speed
        runs: dict[str, list[dict]] = {"ours": [], "hf": []}
        last: dict[str, dict] = {}
        for r in range(args.rounds):
            for side in ("ours", "hf"):
                out = tmp / f"{side}_out"
                shutil.rmtree(out, ignore_errors=True)
                a = {"corpus": str(corpus), "tokenizer": str(tok.path), "cache": str(out), "workers": args.workers}
                res = run_child(side, a, envs[side])
                res["round"] = r + 1
                runs[side].append(res)
                last[side] = res
                print(f"  round {r + 1} {side:4s}: {res['seconds']:.1f}s (CPU {res['cpu_s']:.0f}s), {res['tokens']:,} tokens, "
                      f"tree peak {res['tree_peak_rss_mb']:.0f} MB", flush=True)
        equal, compared, detail = check_same_ids(Path(last["ours"]["out"]), last["hf"]["out"])

        def med(side: str, key: str) -> float:
            return statistics.median(r[key] for r in runs[side])

        rows = []
        for side, name in (("ours", f"lit_tf write_shards (workers={args.workers or 'default'})"),
                           ("hf", f"HF datasets.map (num_proc={HF_NUM_PROC})")):
            s = med(side, "seconds")
            rows.append([name, f"{s:.1f}", f"{med(side, 'cpu_s'):.0f}", f"{nbytes / 1e6 / s:.2f}", f"{runs[side][-1]['tokens'] / s / 1e6:.2f}",
                         f"{med(side, 'tree_peak_rss_mb'):.0f}",
                         f"{med(side, 'maxrss_self_mb'):.0f} / {med(side, 'maxrss_children_mb'):.0f}"])
        print(f"\nPart 1: tokenize + shard {nbytes / 1e6:.1f} MB, median of {args.rounds} alternating rounds")
        print(fmt_table(rows, ["side", "wall s", "CPU s", "MB/s", "Mtok/s", "peak tree RSS MB", "ru_maxrss MB self / child"]))
        print(f"same ids: {equal} ({compared:,} tokens compared, {detail}); "
              f"token counts ours {last['ours']['tokens']:,} / hf {last['hf']['tokens']:,}")
        ratio = med("hf", "seconds") / med("ours", "seconds")
        peak_ours = med("ours", "tree_peak_rss_mb")
        for side in ("ours", "hf"):
            shutil.rmtree(tmp / f"{side}_out", ignore_errors=True)

        # ---------------------------------------------------------------- part 2: memory
        growth = None
        if not args.skip_memory:
            ten = tmp / "corpus_10x.txt"
            write_corpus(ten, 10)
            mem_rows = []
            rss = {}
            for name, path in (("1x", one), ("10x", ten)):
                common = [
                    "data=files", "model=bert_tiny", "objective=mlm", f"data.train_files=[{path}]",
                    f"data.val_fraction={VAL_FRACTION}", f"data.tokenizer.path={tok.path / 'tokenizer.json'}",
                    "logger=none", "callbacks.progress_bar=null", f"trainer.val_check_interval={args.steps // 2}",
                    f"paths.root_dir={ROOT}", f"paths.cache_dir={tmp / 'train_cache'}",
                    f"paths.log_dir={tmp / 'train_logs' / name}", f"paths.mlruns_dir={tmp / 'mlruns'}",
                ]
                run_child("train", {"overrides": [*common, "trainer.max_steps=1"]}, envs["ours"])  # builds the shards
                res = run_child("train", {"overrides": [*common, f"trainer.max_steps={args.steps}"]}, envs["ours"])
                rss[name] = res["maxrss_self_mb"]
                mem_rows.append([name, f"{path.stat().st_size / 1e6:.1f}", f"{res['seconds']:.1f}",
                                 f"{res['val_mlm_loss']:.3f}", f"{res['maxrss_self_mb']:.0f}",
                                 f"{res['tree_peak_rss_mb']:.0f}"])
            growth = rss["10x"] / rss["1x"]
            print(f"\nPart 2: training memory, {args.steps} MLM steps of bert_tiny (batch 32 x 128), shards prebuilt")
            print(fmt_table(mem_rows, ["corpus", "MB", "train s", "val/mlm_loss", "ru_maxrss MB",
                                       "peak tree RSS MB"]))

        print()
        print(f"RATIO data_prep {ratio:.2f}")
        print(f"PEAK_RSS_MB data_prep {peak_ours:.0f}")
        if growth is not None:
            print(f"RSS_GROWTH_10X {growth:.3f}")
        if not equal:
            raise SystemExit("the id streams differ: the comparison is not valid")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
