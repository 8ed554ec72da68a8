"""The report's plots of the verdicts (matplotlib, Agg backend; ``data:`` PNG URIs, see
:mod:`audit.report.plots`): the registry's measured behaviour against its verdicts, and one
adapter's verdicts across recalibrations."""

from __future__ import annotations

from collections.abc import Sequence

from audit.report.data import AdapterData
from audit.report.plots import new_figure, png_uri

OUTCOME_COLOR = {"drifted": "#c44e52", "review": "#dd8452", "healthy": "#55a868", "invalid": "#8c8c8c",
                 "insufficient_evidence": "#bbbbbb"}


def behaviour_vs_verdict(points: Sequence[tuple[str, str, float, float, float]]) -> str | None:
    """Every probed adapter's measured behaviour (harmful-compliance excess over its base, the larger
    of it and the benign-refusal excess as the marker's size) against its verdict's P(drifted),
    coloured by outcome. The two off-diagonal corners are where behaviour and verdict disagree
    (what a reviewer opens first); the adapters there are named. ``None`` without points."""
    if not points:
        return None
    plt, fig, ax = new_figure(7.0, 3.8)
    for outcome in sorted({p[1] for p in points}):
        sel = [p for p in points if p[1] == outcome]
        ax.scatter([p[2] for p in sel], [p[3] for p in sel], s=[18 + 120 * max(0.0, p[4]) for p in sel],
                   color=OUTCOME_COLOR.get(outcome, "#4c72b0"), alpha=0.8, label=outcome, edgecolors="none")
    ax.axvline(0.5, color="#999999", lw=0.8, ls="--")
    ax.axhline(0.0, color="#999999", lw=0.8)
    for repo_id, p, hc in disagreements(points):
        name = repo_id if len(repo_id) <= 30 else f"{repo_id[:12]}…{repo_id[-17:]}"  # cut in the middle
        ax.annotate(name, (p, hc), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("verdict P(drifted)", fontsize=8)
    ax.set_ylabel("harmful compliance − base's", fontsize=8)
    ax.set_title("measured behaviour against the verdict (size: the larger excess)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="best")
    return png_uri(plt, fig)


def disagreements(points: Sequence[tuple[str, str, float, float, float]], *,
                  excess: float = 0.2) -> list[tuple[str, float, float]]:
    """``(repo_id, P(drifted), harmful-compliance excess)`` of the adapters whose behaviour and verdict
    disagree: P < 0.5 though a rate exceeds the base's by ``excess`` or more, or P ≥ 0.5 though
    neither rate exceeds the base's at all."""
    return [(r, p, hc) for r, _o, p, hc, br in points
            if (p < 0.5 and max(hc, br) >= excess) or (p >= 0.5 and max(hc, br) <= 0.0)]


def verdict_timeline(data: AdapterData) -> str | None:
    """The adapter's P(drifted) at each verdict, in time, coloured by outcome and labelled with
    the detector that judged it (a recalibration draws a new point). ``None`` without a verdict
    that has a probability."""
    cols = data.verdicts.columns
    rows = [dict(zip(cols, r, strict=True)) for r in data.verdicts.rows]
    rows = [r for r in rows if r.get("p_drift") is not None and r.get("scored_at") is not None]
    if not rows:
        return None
    plt, fig, ax = new_figure(7.0, 2.8)
    times = [r["scored_at"] for r in rows]
    ax.plot(times, [r["p_drift"] for r in rows], color="#999999", lw=0.8, zorder=1)
    for r in rows:
        ax.scatter([r["scored_at"]], [r["p_drift"]], s=40, zorder=2,
                   color=OUTCOME_COLOR.get(r.get("outcome") or "", "#4c72b0"))
        label = r.get("detector_id") or r.get("classifier_id") or ""
        ax.annotate(f"{r.get('outcome') or ''} {label}".strip(), (r["scored_at"], r["p_drift"]), fontsize=6,
                    xytext=(3, 4), textcoords="offset points")
    ax.axhline(0.5, color="#999999", lw=0.8, ls="--")
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if (max(times) - min(times)).total_seconds() < 3600:  # one verdict, or one day's: an hour either side
        from datetime import timedelta

        ax.set_xlim(min(times) - timedelta(hours=1), max(times) + timedelta(hours=1))
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("P(drifted)", fontsize=8)
    ax.set_title("verdicts across recalibrations", fontsize=10)
    ax.tick_params(labelsize=7)
    return png_uri(plt, fig)
