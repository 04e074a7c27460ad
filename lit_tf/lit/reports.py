"""What a finished run reports beyond its metrics: per-stream test reports (JSON), confusion-matrix
plots and per-class metrics for tasks that have classes, and the summary's speed line."""

from __future__ import annotations

import json
import re
from pathlib import Path


def write_reports(module, out_dir: Path, confusion: bool) -> tuple[Path, dict[str, float]]:
    """Write `module.reports["test"]` under `out_dir/reports`: `<stream>.json` for every test stream
    and, when the task has classes (`confusion`), `<stream>_confusion.png`. Returns the folder and
    the per-class metrics `test[/<lang>]/class/<label>/<precision|recall|f1>`."""
    folder = out_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    per_class: dict[str, float] = {}
    for stream, report in module.reports.get("test", {}).items():
        name = stream or "test"
        (folder / f"{name}.json").write_text(json.dumps(report, indent=2))
        if confusion and "confusion" in report:
            confusion_png(report, folder / f"{name}_confusion.png", title=f"test {stream}".strip())
        for label, scores in report.get("per_class", {}).items():
            key = re.sub(r"[^a-zA-Z0-9_.\- ]+", "_", str(label))  # MLflow's metric-name characters, no nesting
            for m in ("precision", "recall", "f1"):
                per_class[f"test/{stream + '/' if stream else ''}class/{key}/{m}"] = float(scores[m])
    return folder, per_class


def confusion_png(report: dict, path: Path, title: str) -> None:
    """Rows normalised (recall per gold class) as the colour, with the share and the count in each
    cell, white on dark cells; the figure grows with the number of classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm, labels = np.asarray(report["confusion"]), [str(x) for x in report["labels"]]
    k = len(labels)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 1.8 + 0.8 * k)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold class")
    ax.set_xticks(range(k), labels, rotation=45 if max(map(len, labels)) > 4 else 0, ha="right" if k > 1 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}: accuracy {acc:.3f} ({int(np.trace(cm)):,} of {int(cm.sum()):,})")
    size = 11 if k <= 6 else 8 if k <= 12 else 6
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{share[i, j]:.0%}\n{int(cm[i, j]):,}", ha="center", va="center", fontsize=size,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def speed_lines(m: dict) -> list[str]:
    """The summary's speed line: tokens/s, MFU, step time, peak memory, time to the first step."""
    if "perf/tokens_per_s" not in m:
        return []
    parts = [f"{m['perf/tokens_per_s']:,.0f} tokens/s"]
    if "perf/mfu" in m:
        parts.append(f"MFU {100 * m['perf/mfu']:.1f}%")
    parts.append(f"step {m['perf/step_ms']:.0f} ms")
    parts.append(f"peak mem {m['perf/peak_mem_mb']:,.0f} MB")
    if "perf/first_step_s" in m:
        parts.append(f"first step after {m['perf/first_step_s']:.1f}s")
    if m.get("allocator"):
        parts.append(f"malloc: {m['allocator']}")
    return ["  speed:      " + ", ".join(parts)]
