"""The MLflow UI as a user sees it: `make ui` over a store holding a pretraining run, a fine-tuning
run and a smoke sweep, rendered by headless Chromium (Debian's `chromium`; `.ci/run` installs it).

Each page's rendered DOM (`--dump-dom`) is asserted on and a screenshot is kept next to it under
the test's temp dir. With LIT_TF_UI_SCREENSHOTS=<folder> the README's two are also copied there (docs/img
holds them, from this test: `LIT_TF_UI_SCREENSHOTS=docs/img make test ARGS=tests/tracking/test_ui_browser.py`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, free_port, wait_http

from lit_tf.tracking.mlflow import UI_MODEL_TRAINING, run_page

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
README_SHOTS = ("compare_runs", "sweep_parent")  # docs/img/ui_<name>.png
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium missing: apt-get install chromium "
                                                         "(.ci/run installs it)")


def _train(root: Path, cache: Path, *args: str) -> str:
    env = dict(os.environ, LIT_TF_CACHE=str(cache), LIT_TF_SHARED_DATA=str(SHARED))
    proc = subprocess.run([sys.executable, "train.py", *args, f"paths.root_dir={root}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


class UI:
    def __init__(self, url: str, shots: Path) -> None:
        self.url, self.shots = url, shots

    def page(self, path: str, name: str, expect: tuple[str, ...] = (), width: int = 1600, height: int = 1000) -> str:
        """The text of the rendered DOM of `path` (relative to the UI's root; elements separated by
        "|") once it holds every `expect` string
        (the page fills in from its API calls after it renders: dump again, with more virtual time,
        up to 4 times); a screenshot of it is saved as `name`.png."""
        url = f"{self.url}/{path}"
        dom = ""
        for budget in (15_000, 30_000, 60_000, 120_000):
            common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                      f"--window-size={width},{height}", f"--virtual-time-budget={budget}"]
            dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
            dom = re.sub(r"\s*\|[\s|]*", "|", re.sub(r"<[^>]+>", "|", dom))  # its text, one | between elements
            if all(e in dom for e in expect):
                break
        subprocess.run([*common, f"--screenshot={self.shots / (name + '.png')}", url], capture_output=True, timeout=180)
        (self.shots / f"{name}.txt").write_text(dom)
        assert (self.shots / f"{name}.png").stat().st_size > 10_000, f"no screenshot of {url}"
        missing = [e for e in expect if e not in dom]
        assert not missing, f"{url} never showed {missing} (its text and screenshot: {self.shots / name}.*)"
        return dom


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"shared data missing at {SHARED}")
    root, cache = tmp_path_factory.mktemp("ui_store"), tmp_path_factory.mktemp("ui_cache")
    out = {
        "pretrain": _train(root, cache, "debug=smoke", "trainer.max_steps=12"),
        "finetune": _train(root, cache, "experiment=finetune_sst2", "debug=smoke"),
        "finetune2": _train(root, cache, "experiment=finetune_sst2", "debug=smoke", "optim.optimizer.lr=3e-4"),
        "sweep": _train(root, cache, "-m", "sweep=smoke"),
    }
    port = free_port()
    argv = ["make", "-s", "ui", f"PORT={port}", f"MLRUNS={root / 'mlruns'}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(proc, argv, f"http://127.0.0.1:{port}/health", timeout=120)
        shots = tmp_path_factory.mktemp("ui_screenshots")
        yield UI(f"http://127.0.0.1:{port}", shots), out, root
        keep = os.environ.get("LIT_TF_UI_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for name in README_SHOTS:  # those this process took (a worker may run only some tests)
                if (shots / f"{name}.png").is_file():
                    shutil.copy(shots / f"{name}.png", Path(keep) / f"ui_{name}.png")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _ids(stdout: str) -> tuple[str, str]:
    """(experiment id, run id) of the run page link a run prints in its summary."""
    m = re.search(r"this run's page: +http://127\.0\.0\.1:5000/#/experiments/(\d+)/runs/([0-9a-f]{32})\?", stdout)
    assert m, stdout[-2000:]
    return m.group(1), m.group(2)


def _client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def test_the_printed_run_link_and_the_experiment_page_open_on_runs(ui):
    browser, out, root = ui
    exp_id, run_id = _ids(out["pretrain"])
    name = _client(root).get_run(run_id).info.run_name
    dom = browser.page(run_page(exp_id), "experiment_runs", expect=(name, "Tiny BERT, MLM + NSP"))
    assert "Detect Issues" not in dom and "|Usage|" not in dom  # not the GenAI traces overview
    run = browser.page(run_page(exp_id, run_id), "run_overview", expect=(name,))  # the link the run printed
    assert "Overview" in run


def test_a_run_page_shows_its_dataset_system_metrics_and_speed(ui):
    browser, out, root = ui
    exp_id, run_id = _ids(out["pretrain"])
    digest = _client(root).get_run(run_id).inputs.dataset_inputs[0].dataset.digest
    # its dataset inputs (the held-out part behind "+1") and its speed
    browser.page(run_page(exp_id, run_id), "run_overview", expect=(f"pydoc ({digest})", "perf/tokens_per_s", "perf/mfu"))
    browser.page(run_page(exp_id, run_id).replace("?", "/system-metrics?"), "run_system_metrics",
                 expect=("System metrics|(8)", "cpu_utilization_percentage", "disk_usage_percentage"))


def test_the_models_tab_lists_the_fine_tuned_model_with_its_test_accuracy(ui):
    browser, out, root = ui
    client = _client(root)
    exp_id, run_id = _ids(out["finetune"])
    acc = client.get_run(run_id).data.metrics["test/acc"]
    (model,) = [m for m in client.search_logged_models([exp_id]) if m.source_run_id == run_id]
    browser.page(run_page(exp_id).replace("?", "/models?"), "models_tab", expect=("finetune_sst2-bert|Ready",))
    # the model's own page (a click on its name): the run's test metrics
    browser.page(run_page(exp_id).replace("?", f"/models/{model.model_id}?"), "model_page",
                 expect=("finetune_sst2-bert", "test/class/positive/f1",
                         f"|test/acc|-|{client.get_run(run_id).info.run_name}|{acc!r}|"))  # metric, dataset, run, value


def test_screenshots_for_the_readme_run_comparison_and_sweep(ui):
    browser, out, root = ui
    client = _client(root)
    (exp_id, a), (_, b) = _ids(out["finetune"]), _ids(out["finetune2"])
    names = tuple(client.get_run(r).info.run_name for r in (a, b))
    compare = browser.page(f"#/compare-runs?runs=[%22{a}%22,%22{b}%22]&experiments=[%22{exp_id}%22]&{UI_MODEL_TRAINING}",
                           "compare_runs", expect=(*names, "|Artifacts|"), height=1400)
    assert "No common artifacts" not in compare  # the config is a top-level artifact both runs have
    parent = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                "tags.`lit_tf.sweep` = 'parent'")[0]
    trials = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 4
    # the parent's page: its Optuna tags and its trials as child runs
    browser.page(run_page(parent.info.experiment_id, parent.info.run_id), "sweep_parent",
                 expect=(parent.info.run_name, "Child runs", "optuna.best_trial", *(t.info.run_name for t in trials)))
