"""Timeline charts: what visitors saw during a deployment, phase by phase.

One panel per run (a deployment strategy, or a single `zdd deploy --probe`): requests served per
second, failed requests, refused writes and held writes per second, from the load probe's samples,
with each phase shaded and labelled. Panels share their axes, so a longer or bumpier deployment
looks longer or bumpier. Drawn with matplotlib's Agg backend (no display needed).

For one deployment::

    from zdd.chart import TimelineRun, write_timeline, spans_from_durations

    spans = [("clone", t0, t1), ("cutover", t1, t2), ...]  # names and epoch seconds
    write_timeline("deploy.png", [TimelineRun("smooth", probe.samples, probe.started_at, spans)])

When only phase durations are known (`DeployResult.phases`), `spans_from_durations` lays them out
between the epoch seconds at which the deployment started and ended.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import transforms

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from zdd.probe import Sample

# (name, start, end): a phase's name and its start and end in epoch seconds (time.time()).
PhaseSpan = tuple[str, float, float]

# Phase colours: the smooth deployment's phases, then the baselines' steps; anything else
# gets the next colour of `_SPARE`, the same one in every panel.
_PHASE_COLOURS = {
    "clone": "#9ecae1",
    "cutover": "#fdd0a2",
    "deploy": "#fc9272",
    "return": "#a1d99b",
    "idle": "#d9d9d9",
    "stop": "#fc9272",
    "migrate": "#fdae6b",
    "start v2": "#9ecae1",
    "pulumi up": "#fdae6b",
    "verify": "#a1d99b",
}
_SPARE = ("#bcbddc", "#c7e9c0", "#fdd0a2", "#c6dbef", "#e7cb94", "#de9ed6")
_SERVED = "#2b8cbe"
_FAILED = "#d7301f"
_REFUSED = "#ff9f1c"
_HELD = "#6a51a3"


@dataclass
class TimelineRun:
    """One panel of the chart.

    `samples` are a `LoadProbe`'s samples (`at` in seconds since `started_at`), `started_at` the
    probe's `started_at` (epoch seconds), `phases` a list of (name, start epoch, end epoch).
    `window`, if given, is drawn as a bracket over the panel (e.g. the read-only window),
    `brackets` are more (label, start epoch, end epoch) drawn lower down, and `note` is printed
    after the title (e.g. the run's figures).
    """

    title: str
    samples: Sequence[Sample]
    started_at: float
    phases: Sequence[PhaseSpan] = ()
    note: str = ""
    window: tuple[float, float] | None = None
    window_label: str = "read-only window"
    brackets: Sequence[PhaseSpan] = ()


@dataclass(frozen=True)
class Rates:
    """Per-bin rates (per second) of one run; `starts` are bin starts in seconds."""

    starts: list[float]
    served: list[float]
    failed: list[float]
    refused: list[float]
    # Writes the front door held and then carried out (binned when they were sent).
    held: list[float]


def rates(samples: Iterable[Sample], bin_seconds: float, until: float | None = None) -> Rates:
    """Bin samples: served (any other answer), failed, refused writes, held writes.

    Bins cover the samples (a last bin the probe covered less than 80 % of is left out) and at
    least `until` seconds.
    """
    items = list(samples)
    last = max((s.at for s in items), default=0.0)
    count = max(1, math.ceil(last / bin_seconds + 1e-9))
    if count > 1 and last - (count - 1) * bin_seconds < 0.8 * bin_seconds:
        count -= 1  # the probe stopped early in the last bin: its rate would dip for nothing
    count = max(count, math.ceil((until or 0.0) / bin_seconds - 1e-9))
    served, failed, refused, held = ([0.0] * count for _ in range(4))
    for sample in items:
        index = max(0, math.floor(sample.at / bin_seconds + 1e-9))
        if index >= count:
            continue
        if sample.outcome == "failed":
            failed[index] += 1
        elif sample.outcome == "refused":
            refused[index] += 1
        elif sample.held_ms:
            held[index] += 1
        else:
            served[index] += 1
    scale = 1.0 / bin_seconds
    return Rates(
        starts=[i * bin_seconds for i in range(count)],
        served=[v * scale for v in served],
        failed=[v * scale for v in failed],
        refused=[v * scale for v in refused],
        held=[v * scale for v in held],
    )


def spans_from_durations(
    durations: Sequence[tuple[str, float]], started_at: float, ended_at: float | None = None
) -> list[PhaseSpan]:
    """Phase spans from (name, seconds) pairs, e.g. `[(p.name, p.seconds) for p in result.phases]`.

    The phases are laid out one after the other from `started_at` (epoch seconds). With
    `ended_at`, the time not covered by any phase (the checks and config changes between
    updates) is spread evenly over the gaps between phases, so the last one ends at `ended_at`.
    """
    spare = 0.0
    if ended_at is not None and len(durations) > 1:
        spare = max(0.0, ended_at - started_at - sum(s for _, s in durations))
        spare /= len(durations) - 1
    spans: list[PhaseSpan] = []
    at = started_at
    for index, (name, seconds) in enumerate(durations):
        if index:
            at += spare
        spans.append((name, at, at + seconds))
        at += seconds
    return spans


def _colour(name: str, assigned: dict[str, str]) -> str:
    if name not in assigned:
        if name.endswith(": engine"):  # the engine's own time inside an update
            assigned[name] = "#e6e6e6"
        else:
            assigned[name] = _PHASE_COLOURS.get(name) or _SPARE[len(assigned) % len(_SPARE)]
    return assigned[name]


def _draw_phases(
    ax: Axes, run: TimelineRun, x_range: float, assigned: dict[str, str], top: float
) -> None:
    label_y = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for name, start, end in run.phases:
        x0, x1 = start - run.started_at, end - run.started_at
        ax.axvspan(x0, x1, color=_colour(name, assigned), alpha=0.45, lw=0, zorder=0)
        ax.axvline(x0, color="#777777", lw=0.6, zorder=1)
        narrow = (x1 - x0) < 0.06 * x_range
        ax.text(
            (x0 + x1) / 2,
            top,
            f"{name}\n{end - start:.1f}s" if not narrow else f"{name} {end - start:.1f}s",
            transform=label_y,
            ha="center",
            va="top",
            fontsize=7.5 if not narrow else 6.5,
            rotation=0 if not narrow else 90,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
        )
    if run.phases:
        ax.axvline(run.phases[-1][2] - run.started_at, color="#777777", lw=0.6, zorder=1)


def _draw_brackets(ax: Axes, run: TimelineRun) -> None:
    spans = [(f"{run.window_label}", *run.window)] if run.window else []
    for index, (label, start, end) in enumerate([*spans, *run.brackets]):
        _draw_bracket(ax, label, start - run.started_at, end - run.started_at, 0.72 - 0.1 * index)


def _draw_bracket(ax: Axes, label: str, x0: float, x1: float, y: float) -> None:
    blend = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    ax.annotate(
        "",
        xy=(x0, y),
        xytext=(x1, y),
        xycoords=blend,
        textcoords=blend,
        arrowprops={"arrowstyle": "<->", "color": "#444444", "lw": 1.0},
        zorder=5,
    )
    ax.text(
        (x0 + x1) / 2,
        y + 0.02,
        f"{label} {x1 - x0:.1f}s",
        transform=blend,
        ha="center",
        va="bottom",
        fontsize=7.5,
        color="#333333",
        zorder=5,
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
    )


def write_timeline(
    path: str | Path,
    runs: Sequence[TimelineRun],
    *,
    bin_seconds: float = 0.5,
    title: str | None = None,
) -> Path:
    """Write a PNG with one panel per run: requests/s, failed/s, refused writes/s over time.

    Each `TimelineRun` carries the probe's `samples` and `started_at` (epoch seconds) and its
    phases as (name, start epoch, end epoch); x is seconds since that run's probe started.
    Rates are counted in bins of `bin_seconds` by the time each answer arrived. Returns the path.
    """
    if not runs:
        raise ValueError("write_timeline needs at least one run")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    binned = []
    x_max = 0.0
    for run in runs:
        phase_end = max((end - run.started_at for _, _, end in run.phases), default=0.0)
        series = rates(run.samples, bin_seconds, until=phase_end)
        binned.append(series)
        x_max = max(x_max, series.starts[-1] + bin_seconds, phase_end)
    y_max = max(
        max(
            max(r.served),
            max(r.failed),
            max(r.refused),
            max(r.held),
            max(a + b for a, b in zip(r.served, r.failed, strict=True)),
        )
        for r in binned
    )
    y_top = max(10.0, y_max) * 1.45  # headroom for the phase labels

    figure, axes = plt.subplots(
        len(runs),
        1,
        figsize=(12, 2.9 * len(runs) + 0.9),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    assigned: dict[str, str] = {}
    for ax, run, series in zip(axes[:, 0], runs, binned, strict=True):
        _draw_phases(ax, run, x_max, assigned, top=0.98)
        edges = [*series.starts, series.starts[-1] + bin_seconds]
        ax.stairs(
            series.served, edges, color=_SERVED, lw=1.4, baseline=None, label="served /s", zorder=4
        )
        for values, color, label in (
            (series.failed, _FAILED, "failed /s"),
            (series.refused, _REFUSED, "writes refused (503 + Retry-After) /s"),
            (series.held, _HELD, "writes held, then carried out /s"),
        ):
            ax.stairs(values, edges, color=color, fill=True, alpha=0.8, label=label, zorder=3)
        _draw_brackets(ax, run)
        heading = run.title if not run.note else f"{run.title}  —  {run.note}"
        ax.set_title(heading, loc="left", fontsize=10, fontweight="bold")
        ax.set_ylabel("requests / s")
        ax.set_ylim(0, y_top)
        ax.set_xlim(0, x_max)
        ax.grid(axis="y", color="#dddddd", lw=0.5, zorder=0)
    axes[-1, 0].set_xlabel(f"seconds since the load probe started (bins of {bin_seconds:g} s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", ncol=3, fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, x=0.01, ha="left", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
