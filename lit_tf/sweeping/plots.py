"""What a finished (or stopped) study leaves behind: the trials table as CSV and Optuna's
plots as PNG files (matplotlib backend, so no browser or plotly is needed)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lit_tf.data.atomic import atomic_file

log = logging.getLogger(__name__)


def trials_table(study: optuna.Study):
    """The trials as a pandas DataFrame with the columns people read first."""
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs",
                                       "datetime_start", "duration"))
    if "duration" in df:
        df["duration_s"] = df["duration"].dt.total_seconds().round(1)
        df = df.drop(columns=["duration"])
    return df


def write_study_files(study: optuna.Study, out_dir: str | Path) -> list[Path]:
    """trials.csv + every plot that the study's trials make meaningful; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "trials.csv"]
    # sweepers of one study share the folder and may finish together: each file appears whole
    with atomic_file(files[0]) as tmp:
        trials_table(study).to_csv(tmp, index=False)

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with_curves = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    multi = len(study.directions) > 1
    metric = (study.metric_names or ["objective"])[0]  # axis label: the metric, not "Objective Value"
    plots = {}
    if complete:
        if multi:
            plots["pareto_front"] = lambda: ovm.plot_pareto_front(study)
        else:
            plots["optimization_history"] = lambda: ovm.plot_optimization_history(study, target_name=metric)
        if len(complete) >= 2 and complete[0].params:
            target = (lambda t: t.values[0]) if multi else None
            plots["param_importances"] = lambda: ovm.plot_param_importances(study, target=target, target_name=metric)
            plots["parallel_coordinate"] = lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=metric)
    if with_curves:
        plots["intermediate_values"] = lambda: ovm.plot_intermediate_values(study)
    for name, make in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                ax = make()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            fig.set_size_inches(9, 5.5)
            fig.tight_layout()
            path = out / f"{name}.png"
            with atomic_file(path) as tmp:
                fig.savefig(tmp, dpi=100, format="png")
            plt.close(fig)
            files.append(path)
        except Exception as e:  # a plot that the data cannot support is skipped, never fatal
            log.warning("study plot %s skipped: %s", name, e)
    return files
