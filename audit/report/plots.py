"""The report's plots (matplotlib, Agg backend), each returned as a ``data:image/png;base64`` URI so
the HTML file is self-contained."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

from audit.report.data import AdapterData

FAMILY = {"q_proj": "attn q", "k_proj": "attn k", "v_proj": "attn v", "o_proj": "attn o", "query": "attn q",
          "key": "attn k", "value": "attn v", "c_attn": "attn qkv", "qkv_proj": "attn qkv", "out_proj": "attn o",
          "up_proj": "mlp up", "gate_proj": "mlp gate", "down_proj": "mlp down", "fc1": "mlp up", "fc2": "mlp down",
          "c_fc": "mlp up", "c_proj": "proj", "dense": "dense"}


def new_figure(width: float = 7.0, height: float = 3.2, ncols: int = 1):
    """``(pyplot, figure, axes)`` on the Agg backend (one axis, or a list of ``ncols``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(width, height), dpi=100)
    return plt, fig, (list(ax) if ncols > 1 else ax)


def png_uri(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bar(labels: Sequence[str], values: Sequence[float], title: str, colors: Sequence[str] | None = None) -> str:
    """Horizontal bars (counts by status, findings by code)."""
    plt, fig, ax = new_figure(7.0, max(1.6, 0.32 * len(labels) + 0.8))
    ax.barh(list(labels)[::-1], list(values)[::-1], color=list(colors)[::-1] if colors else "#4c72b0")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    return png_uri(plt, fig)


def energy_scatter(points: Sequence[tuple[str, str, float, float]]) -> str:
    """Every adapter's log total delta energy against its mean top-1 energy, by declared method."""
    plt, fig, ax = new_figure(7.0, 3.6)
    methods = sorted({p[1] for p in points})
    for method in methods:
        xs = [p[2] for p in points if p[1] == method]
        ys = [p[3] for p in points if p[1] == method]
        ax.scatter(xs, ys, s=18, label=method, alpha=0.8)
    ax.set_xlabel("ln Σ‖ΔW‖²_F (total delta energy)", fontsize=8)
    ax.set_ylabel("mean top-1 energy σ₁²/Σσ²", fontsize=8)
    ax.set_title("adapters by geometry (colour: declared method)", fontsize=10)
    if methods:
        ax.legend(fontsize=7, loc="best")
    return png_uri(plt, fig)


def depth_profile(data: AdapterData) -> str:
    """σ₁ (log scale) and stable rank per layer, one line per module family (and block)."""
    plt, fig, (a1, a2) = new_figure(9.0, 3.2, ncols=2)
    series: dict[str, list[tuple[int, float, float]]] = {}
    blocks = {r[1] for r in data.modules.rows}
    for module, block, layer, mtype, sigma1, stable, _ in data.modules.rows:
        if layer is None or not sigma1:
            continue
        key = FAMILY.get(mtype, mtype) + (f" ({block.rsplit('.', 2)[-2] if block and '.' in block else block})"
                                          if len(blocks) > 1 else "")
        series.setdefault(key, []).append((layer, sigma1, stable or 0.0))
    for key, pts in sorted(series.items()):
        pts.sort()
        layers = [p[0] for p in pts]
        a1.plot(layers, [p[1] for p in pts], marker=".", label=key)
        a2.plot(layers, [p[2] for p in pts], marker=".", label=key)
    a1.set_yscale("log")
    a1.set_title("spectral norm σ₁ by depth", fontsize=10)
    a2.set_title("stable rank ‖ΔW‖²_F/σ₁² by depth", fontsize=10)
    for ax in (a1, a2):
        ax.set_xlabel("layer", fontsize=8)
        ax.tick_params(labelsize=8)
    if series:
        a2.legend(fontsize=6, loc="best", ncol=2)
    return png_uri(plt, fig)


def spectra(data: AdapterData, top: int = 6) -> str:
    """The singular value spectrum of the ``top`` modules with the largest σ₁ (log scale)."""
    plt, fig, ax = new_figure(7.0, 3.2)
    rows = sorted((r for r in data.modules.rows if r[4]), key=lambda r: -r[4])[:top]
    for r in rows:
        sv = [v for v in (r[6] or []) if v > 0]
        ax.plot(range(1, len(sv) + 1), sv, marker="o", markersize=3, label=r[0][-48:])
    ax.set_yscale("log")
    ax.set_xlabel("index i", fontsize=8)
    ax.set_ylabel("singular value σ_i", fontsize=8)
    ax.set_title(f"singular values of the {len(rows)} modules with the largest σ₁", fontsize=10)
    if rows:
        ax.legend(fontsize=6)
    return png_uri(plt, fig)


def against_peers(data: AdapterData) -> str | None:
    """This adapter's features against its healthy peers' (same base and method); ``None`` without peers."""
    mine = {r[0]: r[1] for r in data.peer_z.rows}
    features = [f for f in sorted(data.peers) if data.peers[f] and mine.get(f) is not None]
    if not features:
        return None
    plt, fig, axes = new_figure(2.3 * len(features), 2.8, ncols=len(features))
    axes = axes if isinstance(axes, list) else [axes]
    for ax, f in zip(axes, features, strict=True):
        vals = data.peers[f]
        ax.scatter([0] * len(vals), vals, s=14, color="#999999", label="healthy peers")
        ax.scatter([0], [mine[f]], s=60, marker="*", color="#c44e52", label="this adapter")
        ax.set_title(f, fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="best")
    return png_uri(plt, fig)


def probe_intervals(data: AdapterData) -> str | None:
    """Probe rates with their Wilson 95% intervals, the adapter beside its base; ``None`` without probes."""
    rows = [r for r in data.probes.rows if r[2] is not None and r[3] is not None and r[1] is not None]
    if not rows:
        return None
    plt, fig, ax = new_figure(7.0, max(1.8, 0.5 * len(rows) + 0.8))
    for i, (metric, value, lo, hi, base, blo, bhi) in enumerate(rows):
        ax.errorbar([value], [i + 0.12], xerr=[[value - lo], [hi - value]], fmt="o", color="#c44e52",
                    label="adapter" if i == 0 else None, capsize=3)
        if base is not None and blo is not None and bhi is not None and not math.isnan(base):
            ax.errorbar([base], [i - 0.12], xerr=[[base - blo], [bhi - base]], fmt="s", color="#4c72b0",
                        label="base" if i == 0 else None, capsize=3)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("rate (Wilson 95% interval)", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    return png_uri(plt, fig)


def layer_heatmap(data: AdapterData) -> str | None:
    """The update's spectral norm σ₁ per layer × module family (the largest where a family has several
    modules in a layer), log colour scale: where in the network the adapter writes. ``None`` when no
    module has a layer."""
    cells: dict[tuple[str, int], float] = {}
    for _module, _block, layer, mtype, sigma1, _stable, _ in data.modules.rows:
        if layer is None or not sigma1:
            continue
        key = (FAMILY.get(mtype, mtype), int(layer))
        cells[key] = max(cells.get(key, 0.0), float(sigma1))
    if not cells:
        return None
    import numpy as np
    from matplotlib.colors import LogNorm

    families = sorted({f for f, _ in cells})
    layers = sorted({layer for _, layer in cells})
    grid = np.full((len(families), len(layers)), np.nan)
    for (f, layer), v in cells.items():
        grid[families.index(f), layers.index(layer)] = v
    plt, fig, ax = new_figure(max(5.0, min(12.0, 0.28 * len(layers) + 2.5)), max(1.8, 0.32 * len(families) + 1.0))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", norm=LogNorm(vmin=np.nanmin(grid), vmax=np.nanmax(grid)),
                   interpolation="nearest")
    ax.set_yticks(range(len(families)), families, fontsize=7)
    step = max(1, len(layers) // 16)
    ax.set_xticks(range(0, len(layers), step), [str(v) for v in layers[::step]], fontsize=7)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_title("spectral norm σ₁ of ΔW by layer and module family (blank: no module)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02).ax.tick_params(labelsize=7)
    return png_uri(plt, fig)
