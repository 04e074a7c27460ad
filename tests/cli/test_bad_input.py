"""Malformed input, table-driven: every row must fail fast with a message naming the file, line or
key, as one `error: ...` line (exit status 2 on the command line), and leave what earlier runs wrote
(outputs/, mlruns/, the tokenizer/shard cache) exactly as it was: no file changed, none added, no
MLflow run created.

Most rows call what the CLI calls (`check_overrides`, `train(cfg)`, `parse_search_space`,
`check_search_space`) in this process; a few run the real commands to prove the exit status and
the single stderr line. One real smoke run (module fixture) provides the checkpoint and the
"already written" state the rows must not touch.

Long lines: a .txt/.jsonl line longer than `lit_tf.data.text.MAX_LINE_CHARS` (4M characters) is
refused after reading at most that much (bounded memory), with its file:line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, SHARED

from lit_tf.errors import LitTfError, format_user_error, user_errors

# --------------------------------------------------------------------------------------------
# the world: one real run's outputs (checkpoint, MLflow store, cache) + malformed inputs
# --------------------------------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    bad: Path
    ckpt: Path
    base: list[str]

    def fmt(self, s: str) -> str:
        return s.format(bad=self.bad, ckpt=self.ckpt, tmp=self.tmp)

    def snapshot(self) -> dict[str, tuple]:
        """Every file under outputs/, mlruns/ and the cache: size, mtime and content hash."""
        out = {}
        for top in ("outputs", "mlruns", "cache", "studies"):
            for p in sorted((self.tmp / top).rglob("*")):
                if p.is_file():
                    st = p.stat()
                    out[str(p.relative_to(self.tmp))] = (st.st_size, st.st_mtime_ns,
                                                         hashlib.sha256(p.read_bytes()).hexdigest())
        return out


class NotAllowed:
    """A class no lit_tf checkpoint holds: loading a file that pickles one must refuse, not run it."""


def _write_inputs(bad: Path, ckpt: Path) -> None:
    bad.mkdir()
    (bad / "empty.txt").write_text("")
    (bad / "latin1.txt").write_bytes("A first paragraph.\n\nUn café très noir.\n".encode("latin-1"))
    with open(bad / "one_line_50mb.txt", "w") as f:  # 50 MB without a newline until the end
        chunk = "word " * 200_000
        for _ in range(50):
            f.write(chunk)
        f.write("\n")
    (bad / "three.en").write_text("one\ntwo\nthree\n")
    (bad / "two.es").write_text("uno\ndos\n")
    (bad / "conll_missing_tag.txt").write_text("EU B-ORG\nrejects O\nGerman\ncall O\n")
    (bad / "no_label_col.tsv").write_text("sentence\tscore\ngood film\t1\nbad film\t0\n")
    (bad / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"film number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n"
                                                            for i in range(16)))
    (bad / "dev_unseen.tsv").write_text("sentence\tlabel\na fine film\t1\nan odd film\tmaybe\n")
    (bad / "text.ckpt").write_text("not a checkpoint\n")
    (bad / "random.ckpt").write_bytes(bytes(range(256)) * 16)
    torch.save({"weights": torch.zeros(3)}, bad / "other.pt")
    torch.save({"lit_tf": {"family": "bert"}, "state_dict": {}, "payload": NotAllowed()}, bad / "object.ckpt")
    data = ckpt.read_bytes()
    (bad / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (bad / "t5").mkdir()
    (bad / "t5" / "config.json").write_text('{"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}')
    # a different tokenizer than the checkpoint's
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a tiny other vocabulary"], trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.save(str(bad / "other_tokenizer.json"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from lit_tf.cli.train import compose_config, train

    tmp = tmp_path_factory.mktemp("bad_input")
    base = [f"paths.log_dir={tmp / 'outputs'}", f"paths.mlruns_dir={tmp / 'mlruns'}",
            f"paths.cache_dir={tmp / 'cache'}", f"paths.shared_data={SHARED}", "debug=smoke"]
    m = train(compose_config([*base, "data.builtin_max_files=40"]))  # what an earlier run left behind
    w = World(tmp, tmp / "bad", Path(m["last_ckpt"]), base)
    _write_inputs(w.bad, w.ckpt)
    _study_with_other_space(tmp / "studies" / "other_space.journal")
    return w


@pytest.fixture
def unchanged(world):
    """Fail the row if it changed, removed or added any file under outputs/, mlruns/ or the cache."""
    before = world.snapshot()
    yield
    after = world.snapshot()
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(set(after) - set(before))
    assert not changed and not added, f"a bad run altered {changed} and added {added}"


# --------------------------------------------------------------------------------------------
# rows run in this process: train(cfg), as `python train.py` runs it
# --------------------------------------------------------------------------------------------
FT = ["experiment=finetune_sst2", "data.train={bad}/train.tsv", "data.val={bad}/train.tsv", "data.test={bad}/train.tsv"]
FILES = ["data=files", "data.val_files=null"]

TRAIN_ROWS = {
    # id: (overrides, substrings the message must contain)
    "empty_corpus": ([*FILES, "data.train_files=[{bad}/empty.txt]"], ["{bad}/empty.txt", "empty file"]),
    "not_utf8": ([*FILES, "data.train_files=[{bad}/latin1.txt]"], ["{bad}/latin1.txt", "not valid UTF-8", "byte"]),
    "one_50mb_line": ([*FILES, "data.train_files=[{bad}/one_line_50mb.txt]"],
                      ["{bad}/one_line_50mb.txt:1", "line longer than 4,194,304 characters"]),
    "missing_glob": ([*FILES, "data.train_files=[{bad}/nowhere/*.txt]"], ["no file matches", "{bad}/nowhere/*.txt"]),
    "parallel_lengths_differ": (["experiment=xlm_mlm_tlm_en_es", "data.parallel.en-es.src=[{bad}/three.en]",
                                 "data.parallel.en-es.tgt=[{bad}/two.es]"],
                                ["{bad}/three.en has 3 lines", "{bad}/two.es has 2", "not aligned"]),
    "conll_missing_tag": (["experiment=conll03_ner", "data.train={bad}/conll_missing_tag.txt"],
                          ["{bad}/conll_missing_tag.txt:3", "'German'"]),
    "label_column_missing": ([*FT, "data.train={bad}/no_label_col.tsv"],
                             ["{bad}/no_label_col.tsv:1", "missing column 'label'", "['sentence', 'score']"]),
    "label_unseen_in_training": ([*FT, "init_from={ckpt}", "data.val={bad}/dev_unseen.tsv"],
                                 ["{bad}/dev_unseen.tsv:3", "label 'maybe' was not seen in the training data"]),
    "batch_size_negative": (["data.batch_size=-3"], ["data.batch_size=-3", "positive integer"]),
    "n_heads_not_dividing_d_model": (["model.n_heads=3"], ["model:", "d_model (32)", "n_heads (3)"]),
    "seq_len_over_model": (["data.max_seq_len=256"], ["data.max_seq_len=256", "model.max_seq_len=128"]),
    "seq_len_over_checkpoint": ([*FT, "init_from={ckpt}", "data.max_seq_len=512"],
                                ["data.max_seq_len=512", "model.max_seq_len=128", "init_from={ckpt}"]),
    "init_from_missing": ([*FT, "init_from={bad}/nothere.ckpt"], ["init_from={bad}/nothere.ckpt", "no such file"]),
    "init_from_text_file": ([*FT, "init_from={bad}/text.ckpt"], ["init_from={bad}/text.ckpt", "text file",
                                                                  "expected a .ckpt file written by train.py"]),
    "init_from_pickled_object": ([*FT, "init_from={bad}/object.ckpt"],
                                 ["init_from={bad}/object.ckpt", "holds a Python object of class", "NotAllowed"]),
    "init_from_unknown_mlflow_run": ([*FT, "init_from=0123456789abcdef0123456789abcdef"],
                                     ["init_from=0123456789abcdef0123456789abcdef", "no such MLflow run"]),
    "init_from_hf_t5": ([*FT, "init_from={bad}/t5"], ["init_from={bad}/t5", "T5ForConditionalGeneration",
                                                      "model_type 't5'", "BertForMaskedLM"]),
    "mt_warm_start_from_bert": (["experiment=mt_en_es_from_xlm", "init_from={ckpt}"],
                                ["init_from={ckpt}", "'seq2seq' run starts from a 'xlm' checkpoint", "not a 'bert'"]),
    "ckpt_path_last_no_run": (["name=never_trained", "ckpt_path=last"],
                              ["ckpt_path=last", "outputs/never_trained/runs/*/checkpoints/last.ckpt"]),
    "ckpt_path_random_bytes": (["ckpt_path={bad}/random.ckpt"], ["ckpt_path={bad}/random.ckpt", "not a PyTorch checkpoint"]),
    "ckpt_path_other_torch_file": (["ckpt_path={bad}/other.pt"], ["ckpt_path={bad}/other.pt", "not a lit_tf checkpoint"]),
    "ckpt_path_truncated": (["ckpt_path={bad}/truncated.ckpt"], ["ckpt_path={bad}/truncated.ckpt", "truncated"]),
}


def _train_error(world: World, overrides: list[str]) -> LitTfError:
    from lit_tf.cli.train import compose_config, train

    cfg = compose_config([*world.base, *(world.fmt(o) for o in overrides)])
    with pytest.raises(LitTfError) as err:
        train(cfg)
    return err.value


def _check_message(world: World, err: BaseException, expect: list[str]) -> None:
    shown = format_user_error(err)
    lines = shown.split("\n")
    assert lines[0].startswith("error: ") and all(ln.startswith("hint: ") for ln in lines[1:]), shown
    for s in expect:
        assert world.fmt(s) in lines[0], f"{world.fmt(s)!r} not in {lines[0]!r}"


@pytest.mark.parametrize("row", list(TRAIN_ROWS))
def test_bad_train_input(world, unchanged, row):
    overrides, expect = TRAIN_ROWS[row]
    _check_message(world, _train_error(world, overrides), expect)


def test_tokenizer_not_the_checkpoints(world, unchanged):
    from lit_tf.cli.train import compose_config, train

    cfg = compose_config([*world.base, *(world.fmt(o) for o in FT),
                          world.fmt("init_from={ckpt}"), world.fmt("data.tokenizer.path={bad}/other_tokenizer.json")])
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert "data.tokenizer.path" in str(err.value) and str(world.ckpt) in str(err.value)


# --------------------------------------------------------------------------------------------
# config keys and sweep spaces: the functions the CLI and the sweeper call
# --------------------------------------------------------------------------------------------
CONFIG_ROWS = {
    "unknown_key": (["trainer.max_stepz=3"], ["unknown config key 'trainer.max_stepz'", "'trainer.max_steps'"]),
    "wrong_type": (["trainer.max_steps=abc"], ["config key 'trainer.max_steps' expects an integer", "'abc'"]),
    "unknown_nested_key": (["data.batchsize=8"], ["unknown config key 'data.batchsize'", "'data.batch_size'"]),
}


@pytest.mark.parametrize("row", list(CONFIG_ROWS))
def test_bad_override(world, row):
    from lit_tf.cli.config_check import check_overrides

    overrides, expect = CONFIG_ROWS[row]
    with pytest.raises(LitTfError) as err:
        check_overrides(overrides, CONF)
    _check_message(world, err.value, expect)


SPACE_ROWS = {
    "interval_empty": ({"optim.optimizer.lr": "interval(1, 1)"}, ["params.optim.optimizer.lr", "low < high"]),
    "range_empty": ({"model.d_ff": "range(5, 5)"}, ["params.model.d_ff", "stop > start"]),
    "unknown_tag": ({"model.d_ff": "tag(logg, range(16, 64))"}, ["params.model.d_ff", "unknown tag(s) ['logg']"]),
}


@pytest.mark.parametrize("row", list(SPACE_ROWS))
def test_bad_search_space(world, row):
    from lit_tf.sweeping.space import parse_search_space

    params, expect = SPACE_ROWS[row]
    with pytest.raises(LitTfError) as err:
        parse_search_space(params)
    _check_message(world, err.value, expect)


def test_sweep_key_not_in_config(world):
    from lit_tf.cli.train import compose_config
    from lit_tf.sweeping.sweeper import LitTfOptunaSweeper

    sweeper = LitTfOptunaSweeper(study_name="s", dir=str(world.tmp / "studies" / "s"), metric="val/loss")
    sweeper.config = compose_config(world.base)
    with pytest.raises(LitTfError) as err:
        sweeper._check_keys(["optim.optimizer.lrr"])
    _check_message(world, err.value, ["params.optim.optimizer.lrr: no such config key", "optim.optimizer.lr?"])


def _study_with_other_space(journal: Path) -> None:
    """A journal holding study 'reused' whose trial searched another space than sweeps/gpt_clm.yaml."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from lit_tf.sweeping import study as st

    study = optuna.create_study(study_name="reused", storage=st.open_storage(str(journal)))
    trial = study.ask({"optim.optimizer.lr": FloatDistribution(1e-5, 1e-3, log=True),
                       "model.n_layers": CategoricalDistribution([1, 2])})
    study.tell(trial, 1.0)


def test_study_reused_with_other_space(world, unchanged):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from lit_tf.sweeping import study as st

    journal = world.tmp / "studies" / "other_space.journal"
    before = world.snapshot()
    study = st.load_existing_study(str(journal), "reused")
    space = {"optim.optimizer.lr": FloatDistribution(1e-4, 3e-2, log=True), "model.d_ff": CategoricalDistribution([32, 64])}
    with pytest.raises(LitTfError) as err:
        st.check_search_space(study, space, str(journal))
    _check_message(world, err.value, ["study 'reused'", str(journal), "params.model.d_ff: not in the stored trials",
                                      "params.model.n_layers: in the stored trials", "params.optim.optimizer.lr: stored"])
    assert world.snapshot() == before
    # the same space is accepted (and recorded on the study for later runs): in a copy of the journal
    copy = world.tmp / "same_space.journal"
    copy.write_bytes(journal.read_bytes())
    study = st.load_existing_study(str(copy), "reused")
    same = {k: d for t in study.trials for k, d in t.distributions.items()}
    st.check_search_space(study, same, str(copy))
    assert st.load_existing_study(str(copy), "reused").user_attrs[st.STUDY_ATTR_SPACE]


# --------------------------------------------------------------------------------------------
# presentation: what the user sees on the command line
# --------------------------------------------------------------------------------------------
def _run(world: World, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("LIT_TF_TRACEBACK", "HYDRA_FULL_ERROR")}
    return subprocess.run([sys.executable, *(world.fmt(a) for a in argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**clean, **(env or {})})


def _hydra_dir(world: World, row: str) -> str:
    return f"hydra.run.dir={world.tmp / 'hydra' / row}"  # Hydra's own job files, outside the snapshot


CLI_ROWS = {
    # id: (argv, exact stderr lines at the end)
    "unknown_key": (["train.py", "trainer.max_stepz=3"], None),
    "ckpt_path_last": (["train.py", "name=never_trained", "ckpt_path=last"],
                       ["error: ckpt_path=last: no checkpoint found under {tmp}/outputs/never_trained/runs/*/checkpoints/"
                        "last.ckpt", "hint: train this experiment once first, or give ckpt_path=/path/to/file.ckpt"]),
    "init_from_text": (["train.py", *FT, "init_from={bad}/text.ckpt"],
                       ["error: init_from={bad}/text.ckpt: it is a text file; expected a .ckpt file written by train.py"]),
    "predict_truncated": (["-m", "lit_tf.cli.predict", "ckpt={bad}/truncated.ckpt", "text=hello"], None),
}


@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_cli_prints_one_error_line(world, unchanged, row):
    argv, tail = CLI_ROWS[row]
    if argv[0] == "train.py":
        argv = [str(ROOT / "train.py"), *world.base, _hydra_dir(world, row), *argv[1:]]
    p = _run(world, *argv)
    err_lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "HYDRA_FULL_ERROR" not in p.stderr, p.stderr[-3000:]
    errors = [ln for ln in err_lines if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr[-3000:]
    if tail is not None:
        assert err_lines[-len(tail):] == [world.fmt(t) for t in tail], p.stderr[-3000:]


def test_cli_sweep_study_reused_with_other_space(world, unchanged):
    journal = world.tmp / "studies" / "other_space.journal"
    p = _run(world, str(ROOT / "train.py"), "-m", "sweep=gpt_clm", *world.base[:-1], "hydra.sweeper.study_name=reused",
             f"hydra.sweeper.storage={journal}", f"hydra.sweeper.dir={world.tmp / 'hydra' / 'sweep'}")
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "HYDRA_FULL_ERROR" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("error: ", "hint: "))]
    assert lines[0].startswith(f"error: study 'reused' in {journal} was run with a different search space: ")
    assert "params.model.n_layers" in lines[0] and lines[1].startswith("hint: ")


@pytest.mark.parametrize("env", ["LIT_TF_TRACEBACK", "HYDRA_FULL_ERROR"])
def test_traceback_on_request(world, env):
    p = _run(world, str(ROOT / "train.py"), "trainer.max_stepz=3", env={env: "1"})
    assert p.returncode != 0
    assert "Traceback" in p.stderr and "ConfigError: unknown config key 'trainer.max_stepz'" in p.stderr, p.stderr[-3000:]


def test_bugs_keep_their_traceback():
    with pytest.raises(KeyError), user_errors():
        raise KeyError("a bug, not bad input")
    with pytest.raises(SystemExit) as exit_:
        with user_errors():
            raise LitTfError("x=1: bad")
    assert exit_.value.code == 2
    with pytest.raises(LitTfError), user_errors(enabled=False):  # inside a sweep trial: propagate
        raise LitTfError("x=1: bad")
