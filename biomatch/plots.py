"""Figures (PNG) drawn with matplotlib's Agg backend.

A plain module of functions: each takes a result object and an output path,
imports matplotlib inside the function (so ``import biomatch`` stays light)
and writes one PNG.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_extraction"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_extraction(result, path, *, tick_px: float = 12.0) -> Path:
    """Draw an extraction over its image: segmentation outline and minutiae.

    Ridge endings are red circles, bifurcations blue squares; each has a tick
    in its direction (angle counter-clockwise from the x axis, y up).

    Parameters
    ----------
    result : biomatch.extraction.Extraction
        From :func:`biomatch.extraction.extract_detailed`.
    path : str or os.PathLike
        PNG to write.
    tick_px : float
        Length of the direction ticks in original image pixels.

    Returns
    -------
    Path
        The file written.
    """
    import numpy as np

    plt = _pyplot()
    image = result.image
    template = result.template
    m = template.minutiae
    h, w = image.pixels.shape
    fig, ax = plt.subplots(figsize=(max(4.0, w / 80), max(4.0, h / 80)), dpi=100)
    try:
        ax.imshow(image.pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        # segmentation outline, mask drawn in working pixels mapped to original ones
        mh, mw = result.mask.shape
        s = result.scale
        xs = (np.arange(mw) + 0.5) * s - 0.5
        ys = (np.arange(mh) + 0.5) * s - 0.5
        ax.contour(xs, ys, result.mask.astype(float), levels=[0.5], colors="yellow", linewidths=1.0)
        for kind, color, marker, label in ((1, "red", "o", "ending"), (2, "deepskyblue", "s", "bifurcation")):
            sel = m[m["type"] == kind]
            if sel.size == 0:
                continue
            x, y, a = sel["x"], sel["y"], sel["angle"].astype(float)
            ax.scatter(x, y, s=30, facecolors="none", edgecolors=color, marker=marker, linewidths=1.2, label=f"{label} ({sel.size})")
            # angle is CCW with y up; image rows grow downwards
            dx, dy = tick_px * np.cos(a), -tick_px * np.sin(a)
            ax.plot(np.stack([x, x + dx]), np.stack([y, y + dy]), color=color, linewidth=1.2)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"{Path(image.name).name}: {len(template)} minutiae, quality {template.quality}", fontsize=9)
        ax.legend(loc="lower right", fontsize=7, framealpha=0.7)
        ax.set_axis_off()
        out = Path(path)
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
