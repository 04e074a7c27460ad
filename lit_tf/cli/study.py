"""Inspect Optuna studies written by `python train.py -m sweep=NAME`.

    python -m lit_tf.cli.study summary <storage> <study>   # the trials table, best trial first line
    python -m lit_tf.cli.study list <storage>              # the studies a storage holds

<storage> is what the sweep printed: the journal file (outputs/sweeps/<study>/optuna.journal)
or an RDB URL (sqlite:///..., postgresql://...).
"""

from __future__ import annotations

import argparse
import sys

from lit_tf.sweeping import study as st


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    return "-" if v is None else str(v)


def summary_lines(storage: str, name: str) -> list[str]:
    from optuna.trial import TrialState

    spec = st.resolve_storage_spec(storage, None)
    study = st.load_existing_study(spec, name)
    trials = study.get_trials(deepcopy=False)
    metrics = study.metric_names or [f"value{i}" for i in range(len(study.directions))]
    params = sorted({k for t in trials for k in t.params})
    header = ["#", "state", *metrics, "duration_s", *params, "note"]
    rows = []
    for t in trials:
        values = t.values if t.values is not None else [None] * len(metrics)
        dur = t.duration.total_seconds() if t.duration else None
        note = ""
        if t.state == TrialState.PRUNED:
            note = f"pruned at step {t.user_attrs.get(st.ATTR_PRUNED_STEP, t.last_step)}"
        elif t.state == TrialState.FAIL:
            reason = str(t.user_attrs.get(st.ATTR_FAIL_REASON, "")).strip().splitlines()
            note = ("interrupted; re-run" if t.user_attrs.get(st.ATTR_INTERRUPTED) else "") + \
                   (reason[-1][:80] if reason and not t.user_attrs.get(st.ATTR_INTERRUPTED) else "")
        rows.append([str(t.number), t.state.name, *map(_fmt, values), _fmt(dur),
                     *(_fmt(t.params.get(p)) for p in params), note])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    c = st.counts(study)
    dirs = ", ".join(f"{m} ({d.name.lower()})" for m, d in zip(metrics, study.directions))
    lines = [f"study '{name}' in {st.shown_storage(spec)}: {len(trials)} trials - {c['complete']} complete, {c['pruned']} pruned, "
             f"{c['failed']} failed, {c['interrupted']} interrupted, {c['running']} running; objective {dirs}"]
    if c["complete"]:
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
        lines.append("best: " + "; ".join(f"#{b.number} {', '.join(map(_fmt, b.values))} {b.params}" for b in best))
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lit_tf.cli.study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print a study's trials table")
    s.add_argument("storage")
    s.add_argument("study")
    ls = sub.add_parser("list", help="list the studies in a storage")
    ls.add_argument("storage")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "summary":
            print("\n".join(summary_lines(args.storage, args.study)))
        else:
            import optuna

            spec = st.resolve_storage_spec(args.storage, None)
            for s_ in optuna.get_all_study_summaries(st.open_existing_storage(spec), include_best_trial=False):
                print(f"{s_.study_name}\t{s_.n_trials} trials\tstarted {s_.datetime_start:%Y-%m-%d %H:%M}"
                      if s_.datetime_start else f"{s_.study_name}\t{s_.n_trials} trials")
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
