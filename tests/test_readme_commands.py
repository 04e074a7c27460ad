"""Every command in README.md's ```bash blocks, run as a user types it.

The commands are read from the README at collection time, so a new or changed command is picked
up by itself. They run in order, in a copy of the repository laid out as a user has it (the repo
root as working directory, `../shared` beside it, a fresh `mlruns/`, `outputs/` and `.cache/`),
with no `paths.*` or other overrides. The only changes a command gets are the documented
shrinking switches:

- `python train.py ...` that trains: `debug=smoke` appended (a sweep under `debug=smoke` goes to
  study `<name>-smoke` and runs at most `hydra.sweeper.debug_n_trials` trials);
- `make train`: `ARGS=debug=smoke`; `make ui`, `make mlflow-server`: `PORT=<a free port>`;
- `python benchmarks/<script>.py`: `--help`.

The cluster section's engines are started as the README starts them, on free ports: the
environment variables the README documents for that (`LIT_TF_PG_PORT`, `LIT_TF_PG_DIR`,
`LIT_TF_SLURM_PORT`, `LIT_TF_SLURM_DIR`) point `make postgres` and `make slurm-up` at them, and
the documented default addresses in later commands (`127.0.0.1:5433`, `127.0.0.1:5000`) are
replaced by the real ones. `eval "$(cmd)"` and `export VAR=value` lines set the environment of the
commands after them; a line ending in `&` starts a server that runs until the module ends.

Placeholders (`<run>`, `<MLflow run id>`, `.../best.ckpt`, `/data/...`, ...) are filled from what
earlier commands really produced (run folders, printed MLflow run ids) or, for a user's own
files, from small files written here from the shared data. A command that cannot run on this
machine is listed in SKIPS with its reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, free_port, wait_http

README = ROOT / "README.md"
PY_BIN = Path(sys.executable).parent  # the interpreter running the tests: `python` of the commands


# --------------------------------------------------------------------------------------------
# reading the README
# --------------------------------------------------------------------------------------------
def _strip_comment(line: str) -> str:
    """`cmd args  # comment` -> `cmd args` (a `#` inside quotes or a word is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block as typed (placeholders such as `<run id>` included):
    continuation lines joined, comments and blank lines dropped."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).split("\n"):
            line = _strip_comment(line)
            if line:
                out.append(line)
    return out


COMMANDS = readme_commands(README.read_text())


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


# (pattern in the command, reason): the commands this machine cannot run
SKIPS: list[tuple[str, str]] = [
    (r"^make test", "this test runs inside `make test`"),
    (r"hydra/launcher=submitit_slurm", "needs a SLURM cluster and a PostgreSQL server"),
    (r"data\.hf_name=", "downloads a data set from the Hugging Face hub (no network here; the HF "
                        "dataset code path is tested on local files in tests/data)"),
    (r"^pip install", "installs an optional package from PyPI"),
]
if not _has_cuda():
    SKIPS += [(r"trainer=(gpu|ddp|fsdp)\b|hydra/launcher=local_gpus", "needs a CUDA GPU")]


def _cluster_reasons() -> list[tuple[str, str]]:
    """The engines of the cluster section this machine cannot start (pattern, reason)."""
    sys.path.insert(0, str(ROOT / "tests" / "cluster"))
    from pg_server import no_server
    from slurm_cluster import why_not

    out = []
    if why_not():
        out.append((r"slurm", f"{why_not()} (tests/cluster/test_slurm.py says the same)"))
    if no_server():
        out.append((r"postgres", no_server()))
    return out


SKIPS += _cluster_reasons()
if shutil.which("optuna-dashboard") is None:
    SKIPS += [(r"^optuna-dashboard", "optuna-dashboard is optional and not installed")]


def skip_reason(cmd: str) -> str | None:
    return next((reason for pat, reason in SKIPS if re.search(pat, cmd)), None)


# --------------------------------------------------------------------------------------------
# the user's clone
# --------------------------------------------------------------------------------------------
@dataclass
class Workspace:
    repo: Path
    env: dict
    outputs: list[str] = field(default_factory=list)  # stdout of every command so far
    run_ids: dict[str, str] = field(default_factory=dict)  # experiment -> first MLflow run id printed
    addresses: dict[str, str] = field(default_factory=dict)  # README's default address -> the real one
    servers: list[subprocess.Popen] = field(default_factory=list)  # started by lines ending in `&`


def _copy_checkout(dst: Path) -> None:
    """Tracked and untracked-not-ignored files, with their mtimes (so `make` sees an installed venv)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _user_files(ws: Path, repo: Path) -> None:
    """The user's own files that the README's examples name."""
    shakespeare = (SHARED / "tinyshakespeare" / "input.txt").read_text().split("\n")
    books = ws / "data" / "books"
    books.mkdir(parents=True)
    (books / "sonnets.txt").write_text("\n".join(shakespeare[:3000]))
    (books / "plays.txt").write_text("\n".join(shakespeare[3000:6000]))
    (ws / "data" / "heldout.txt").write_text("\n".join(shakespeare[6000:7000]))
    with open(repo / "corpus.jsonl", "w") as f:
        for para in (SHARED / "wikitext2" / "wiki.valid.raw").read_text().split("\n")[:1500]:
            if para.strip() and not para.strip().startswith("="):
                f.write(json.dumps({"body": para.strip()}) + "\n")
    laser = SHARED / "tatoeba_laser"  # sentences to translate, with their references
    for ext, lang in (("en", "eng"), ("es", "spa")):
        lines = (laser / f"tatoeba.spa-eng.{lang}").read_text(encoding="utf-8").split("\n")[:20]
        (ws / "data" / f"news.{ext}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [ln.split("\t") for ln in (SHARED / "xnli" / "dev-part1-en.tsv").read_text().split("\n") if ln.strip()]
    for name, part in (("train", rows[:600]), ("dev", rows[600:700]), ("test", rows[700:800])):
        with open(repo / f"{name}.jsonl", "w") as f:
            for premise, hypothesis, label in part:
                f.write(json.dumps({"premise": premise, "hypothesis": hypothesis, "label": label}) + "\n")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Iterator[Workspace]:
    if not (SHARED / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"shared data missing at {SHARED}")
    top = tmp_path_factory.mktemp("user")
    repo = top / "lit_tf"
    _copy_checkout(repo)
    if (ROOT / ".venv").is_dir():
        (repo / ".venv").symlink_to(ROOT / ".venv")
    # ../shared/data beside the clone, as in the README
    (top / "shared").mkdir()
    (top / "shared" / "data").symlink_to(SHARED)
    _user_files(top, repo)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIT_TF_", "HYDRA_", "MLFLOW_", "PYTEST_")) and k != "PYTHONPATH"}
    env.update(PATH=f"{PY_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(repo), PYTHONUNBUFFERED="1")
    # the cluster section's engines: state folders the daemons' users can enter (not pytest's
    # root-only tmp) and free ports, through the variables the README documents
    engines = Path(tempfile.mkdtemp(prefix="lit_tf_readme_engines."))
    engines.chmod(0o755)
    pg_port, slurm_port = free_port(), _free_port_run(3)
    env.update(LIT_TF_PG_DIR=str(engines / "postgres"), LIT_TF_PG_PORT=str(pg_port),
               LIT_TF_SLURM_DIR=str(engines / "slurm"), LIT_TF_SLURM_PORT=str(slurm_port))
    w = Workspace(repo, env, addresses={"127.0.0.1:5433": f"127.0.0.1:{pg_port}"})
    try:
        yield w
    finally:  # whatever a failed command left running
        for proc in w.servers:
            _stop(proc)
        for script in ("local_slurm.sh", "local_postgres.sh"):
            if (repo / "scripts" / script).is_file():
                subprocess.run(["bash", str(repo / "scripts" / script), "down"], env=env, capture_output=True,
                               timeout=300)
        shutil.rmtree(engines, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# placeholders: filled from what earlier commands produced
# --------------------------------------------------------------------------------------------
def _newest(repo: Path, pattern: str, what: str) -> Path:
    hits = sorted(repo.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not hits:
        raise AssertionError(f"{what}: no earlier README command produced {pattern}")
    return hits[-1]


def _ckpt(repo: Path, experiment: str) -> str:
    return str(_newest(repo, f"outputs/{experiment}/runs/*/checkpoints/last.ckpt", f"a {experiment} checkpoint")
               .relative_to(repo))


def _hf_dir(w: Workspace) -> str:
    """`/models/my-bert`: a Hugging Face model dir, exported from the README's BERT run by our CLI."""
    out = w.repo.parent / "models" / "my-bert"
    if not out.is_dir():
        _run(w, ["python", "-m", "lit_tf.cli.export", f"ckpt={_ckpt(w.repo, 'bert_mlm_nsp_en')}", f"out={out}"])
    return str(out)


def fill(cmd: str, w: Workspace) -> str:
    def run_dir(m: re.Match) -> str:
        return _ckpt(w.repo, m.group(1)).split("/checkpoints/")[0] + "/"

    cmd = re.sub(r"outputs/(\w+)/runs/<run>/", run_dir, cmd)
    if "<MLflow run id>" in cmd or "<run id>" in cmd:
        if "bert_mlm_nsp_en" not in w.run_ids:
            raise AssertionError("an MLflow run id is needed, but no earlier bert_mlm_nsp_en run printed one")
        cmd = cmd.replace("<MLflow run id>", w.run_ids["bert_mlm_nsp_en"]).replace("<run id>", w.run_ids["bert_mlm_nsp_en"])
    for m in re.finditer(r"<(\w+) run id>", cmd):  # e.g. <finetune_sst2 run id>: that experiment's first run
        if m.group(1) not in w.run_ids:
            raise AssertionError(f"{m.group(0)} is needed, but no earlier {m.group(1)} run printed one")
        cmd = cmd.replace(m.group(0), w.run_ids[m.group(1)])
    if "init_from=..." in cmd:  # "a pretrained encoder": XLM for the cross-lingual recipes, else BERT
        family = "xlm_mlm_tlm_en_es" if "zeroshot" in cmd else "bert_mlm_nsp_en"
        cmd = cmd.replace("init_from=...", f"init_from={_ckpt(w.repo, family)}")
    if ".../best.ckpt" in cmd:
        best = _newest(w.repo, "outputs/*/runs/*/checkpoints/best*.ckpt", "a fine-tuned checkpoint")
        cmd = cmd.replace(".../best.ckpt", str(best.relative_to(w.repo)))
    if "/models/my-bert" in cmd:
        cmd = cmd.replace("/models/my-bert", _hf_dir(w))
    cmd = cmd.replace("=/data/", f"={w.repo.parent}/data/").replace("[/data/", f"[{w.repo.parent}/data/")
    for default, real in w.addresses.items():
        cmd = cmd.replace(default, real)
    left = re.findall(r"<[^<>]*>", cmd)
    assert not left, f"README command has placeholder(s) {left} this test cannot fill: teach fill() about them"
    return cmd


def shrink(argv: list[str]) -> list[str]:
    """The documented switches that make a command quick (see the module docstring)."""
    if argv[:2] == ["python", "train.py"] and not ({"--help", "-h"} & set(argv)):
        return argv if any(a.startswith("debug=") for a in argv) else [*argv, "debug=smoke"]
    if argv[:2] == ["make", "train"]:
        return [*argv, "ARGS=debug=smoke"]
    if argv[0] == "python" and len(argv) > 1 and argv[1].startswith("benchmarks/"):
        return [*argv, "--help"]
    return argv


def _run(w: Workspace, argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=w.repo, env=w.env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"`{shlex.join(argv)}` exited {proc.returncode}\n--- stdout (end)\n{proc.stdout[-3000:]}\n"
        f"--- stderr (end)\n{proc.stderr[-5000:]}")
    return proc


def _free_port_run(n: int) -> int:
    """A port p with p .. p+n-1 all free (SLURM's daemons take consecutive ports)."""
    for _ in range(100):
        base = free_port()
        try:
            for p in range(base + 1, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise AssertionError(f"no {n} consecutive free ports")


def _set_env(w: Workspace, text: str) -> None:
    """`export VAR=value` lines (as `eval "$(...)"` or the README runs them) -> the workspace environment."""
    for line in text.splitlines():
        m = re.match(r"\s*export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            value = shlex.split(m.group(2))[0] if m.group(2).strip() else ""
            w.env[m.group(1)] = os.path.expandvars(value.replace("$PWD", str(w.repo)))


def _serve_and_get(w: Workspace, argv: list[str], port: int, path: str = "/", timeout: float = 180) -> str:
    """Start a server command, wait until it answers HTTP on 127.0.0.1:port, return the page; stop it."""
    proc = subprocess.Popen(argv, cwd=w.repo, env=w.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        return wait_http(proc, argv, f"http://127.0.0.1:{port}{path}", timeout)
    finally:
        _stop(proc)


# --------------------------------------------------------------------------------------------
# checks beyond "exit 0" for the commands whose output a user relies on
# --------------------------------------------------------------------------------------------
def _mlflow_client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")


def check_sweep(w: Workspace, study: str, n_trials: int, stdout: str) -> None:
    assert "best trial #" in stdout and "reproduce: python train.py" in stdout, stdout[-2000:]
    client = _mlflow_client(w.repo)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, f"tags.`optuna.study_name` = '{study}' and tags.`lit_tf.sweep` = 'parent'")
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == n_trials, [r.info.run_name for r in children]
    assert all(r.info.status == "FINISHED" for r in children)
    # trials are tagged (filterable) and named by family, objective and trial number
    assert all(r.data.tags.get("lit_tf.trial") == "true" for r in children)
    assert sorted(r.info.run_name.rsplit("-", 1)[1] for r in children) == [f"t{i}" for i in range(n_trials)]
    assert any(k.startswith("best") for k in parents[0].data.metrics), parents[0].data.metrics
    exp = client.get_experiment(parents[0].info.experiment_id)  # the UI opens the sweep's experiment on its runs
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development", exp.tags


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[:80] for c in COMMANDS])
def test_readme_command(ws: Workspace, cmd: str) -> None:
    reason = skip_reason(cmd)
    if reason:
        pytest.skip(reason)
    line = fill(cmd, ws)
    if line.startswith("eval "):  # eval "$(cmd)": run cmd, take the exports it prints
        inner = re.fullmatch(r'eval "\$\((.*)\)"', line)
        assert inner, f"cannot read {line!r}"
        _set_env(ws, _run(ws, shlex.split(inner.group(1))).stdout)
        return
    if line.startswith("export "):
        _set_env(ws, line)
        return
    argv = shrink(shlex.split(line))
    if argv[-1] == "&":  # a server the next commands use: started now, stopped when the module ends
        assert argv[:2] == ["make", "mlflow-server"], f"no health check known for the server {line!r}"
        port = free_port()
        proc = subprocess.Popen([*argv[:-1], f"PORT={port}"], cwd=ws.repo, env=ws.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        ws.servers.append(proc)
        wait_http(proc, argv, f"http://127.0.0.1:{port}/health")
        ws.addresses["127.0.0.1:5000"] = f"127.0.0.1:{port}"
        return
    if argv[:2] == ["make", "ui"]:
        port = free_port()
        page = _serve_and_get(ws, [*argv, f"PORT={port}"], port)
        assert "mlflow" in page.lower()
        return
    proc = _run(ws, argv)
    ws.outputs.append(proc.stdout)
    printed = re.search(r"MLflow run: ([0-9a-f]{32}) \(experiment '([^']+)'", proc.stdout)
    if printed:
        ws.run_ids.setdefault(printed.group(2), printed.group(1))
    if argv[:2] == ["python", "train.py"] and "-m" not in argv and "--help" not in argv:
        assert "lit_tf: finished" in proc.stdout, proc.stdout[-2000:]
    if "--help" in argv or argv[-1] == "-h":
        assert "usage" in proc.stdout.lower() or "== Config groups ==" in proc.stdout or "Powered by Hydra" in proc.stdout
    if "trainer=ddp_cpu" in argv and "-m" not in argv:  # every rank ended with the same weights
        devices = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("trainer.devices=")), 2)
        info = json.loads(_newest(ws.repo, "outputs/*/runs/*/run.json", "a DDP run").read_text())
        assert info["replicas"]["world_size"] == devices, info
    sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("sweep=")), None) if "-m" in argv else None
    if sweep == "smoke":  # the sweep the README tells a new user to try: 4 trials, 1 parent run + 4 children
        check_sweep(ws, "smoke", 4, proc.stdout)
    elif sweep is not None:
        assert "best trial #" in proc.stdout or "trials done" in proc.stdout, proc.stdout[-2000:]


def test_readme_has_the_commands_this_test_promises():
    """The README keeps showing the sweep a new user runs first, every shipped study and every
    experiment (so test_readme_command trains every recipe end to end, as a user starts it)."""
    assert "python train.py -m sweep=smoke" in COMMANDS
    experiments = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")} - {"quickstart"}
    trained = {m.group(1) for c in COMMANDS if c.startswith("python train.py") and not skip_reason(c)
               for m in [re.search(r"experiment=(\w+)", c)] if m}
    assert experiments <= trained, f"experiments the README never trains: {sorted(experiments - trained)}"
    shipped = {p.stem for p in (ROOT / "sweeps").glob("*.yaml")}
    shown = {m.group(1) for c in COMMANDS for m in [re.search(r"-m sweep=(\w+)", c)] if m}
    assert shipped <= shown, f"studies in sweeps/ that the README never runs: {sorted(shipped - shown)}"
