"""Figures (PNG) drawn with matplotlib's Agg backend.

A plain module of functions: each takes a result object and an output path,
imports matplotlib inside the function (so ``import biomatch`` stays light)
and writes one PNG.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_extraction", "plot_det", "plot_score_histogram", "plot_cmc", "plot_pairs"]


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


# --------------------------------------------------------------------------- evaluation plots
#: Probit-axis ticks of DET plots (error rates).
DET_TICKS = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)


def plot_det(curves, path, *, title: str = "DET") -> Path:
    """DET curves (FNMR against FMR) on normal-deviate (probit) axes.

    Parameters
    ----------
    curves : dict of str -> (mated, nonmated)
        Label -> the two 1-D float score arrays (accept when score >= threshold).
    path : str or os.PathLike
        PNG to write.
    """
    import numpy as np
    from scipy.stats import norm

    from .evaluation import det_points

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=100)
    try:
        lo = 0.5 * min(DET_TICKS)
        for label, (mated, nonmated) in curves.items():
            fmr, fnmr = det_points(mated, nonmated)
            # zero rates sit at the edge of the plot (probit of 0 is -inf)
            x = norm.ppf(np.clip(fmr, lo, 1 - 1e-9))
            y = norm.ppf(np.clip(fnmr, lo, 1 - 1e-9))
            ax.step(x, y, where="post", label=f"{label} ({len(mated)} mated, {len(nonmated)} non-mated)")
        ticks = norm.ppf(DET_TICKS)
        labels = [f"{t:g}" for t in DET_TICKS]
        ax.set_xticks(ticks, labels)
        ax.set_yticks(ticks, labels)
        ax.set_xlim(norm.ppf(lo), norm.ppf(0.5))
        ax.set_ylim(norm.ppf(lo), norm.ppf(0.5))
        ax.plot([norm.ppf(lo), norm.ppf(0.5)], [norm.ppf(lo), norm.ppf(0.5)], ":", color="gray", lw=0.8)
        ax.set_xlabel("FMR (probit scale)")
        ax.set_ylabel("FNMR (probit scale)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        out = Path(path)
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def plot_score_histogram(mated, nonmated, path, *, bins: int = 50, title: str = "Score distributions") -> Path:
    """Mated and non-mated score histograms (densities, log count axis)."""
    import numpy as np

    plt = _pyplot()
    mated = np.asarray(mated, dtype=float)
    nonmated = np.asarray(nonmated, dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    try:
        both = np.concatenate([mated, nonmated])
        lo, hi = both.min(), both.max()
        pos = both[both > 0]
        # scores spanning decades (impostors crowd near 0): log-spaced bins, scores <= 0 in the first bin
        log_x = lo >= 0 and pos.size and hi / pos.min() > 50
        if log_x:
            floor = pos.min()
            edges = np.geomspace(floor, hi, bins + 1)
            mated, nonmated = np.maximum(mated, floor), np.maximum(nonmated, floor)
        else:
            edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        ax.hist(nonmated, edges, alpha=0.6, label=f"non-mated ({nonmated.size})", color="tab:red")
        ax.hist(mated, edges, alpha=0.6, label=f"mated ({mated.size})", color="tab:blue")
        ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("raw score" + (" (log scale; scores <= 0 in the first bin)" if log_x else ""))
        ax.set_ylabel("comparisons")
        ax.set_title(title)
        ax.legend()
        out = Path(path)
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def plot_cmc(cmc, path, *, title: str = "CMC") -> Path:
    """Cumulative match characteristic: rank-k hit rate against k (1-based)."""
    import numpy as np

    plt = _pyplot()
    y = np.asarray(cmc, dtype=float)
    fig, ax = plt.subplots(figsize=(5.0, 4.0), dpi=100)
    try:
        ax.plot(np.arange(1, y.size + 1), y, marker="o")
        ax.set_xlabel("rank")
        ax.set_ylabel("identification rate")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        out = Path(path)
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def plot_pairs(a, b, match, path, *, images=(None, None), names=("A", "B"), tick_px: float = 12.0) -> Path:
    """Two prints side by side, their minutiae, and the pairs the score rests on joined
    (``match.pairs``: those agreeing under the matcher's final alignment).

    Parameters
    ----------
    a, b : biomatch.Template
        The compared templates (``match.pairs`` indexes their minutiae).
    match : biomatch.scoring.Match
        From :func:`biomatch.verify`; its score and FMR go in the title.
    path : str or os.PathLike
        PNG to write.
    images : (ndarray or None, ndarray or None)
        2-D uint8 pixels behind each template (original frame); a blank
        canvas of the template size where None.
    names : (str, str)
        Labels of the two prints.

    Returns
    -------
    Path
        The file written.
    """
    import numpy as np

    plt = _pyplot()
    panels = []
    for t, img in zip((a, b), images):
        if img is None:
            img = np.full((t.height, t.width), 255, dtype=np.uint8)
        panels.append(np.asarray(img))
    h = max(p.shape[0] for p in panels)
    gap = 20
    offset_b = panels[0].shape[1] + gap
    canvas = np.full((h, offset_b + panels[1].shape[1]), 255, dtype=np.uint8)
    canvas[: panels[0].shape[0], : panels[0].shape[1]] = panels[0]
    canvas[: panels[1].shape[0], offset_b:] = panels[1]
    fig, ax = plt.subplots(figsize=(max(6.0, canvas.shape[1] / 80), max(4.0, h / 80)), dpi=100)
    try:
        ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for t, dx, color in ((a, 0.0, "red"), (b, float(offset_b), "deepskyblue")):
            m = t.minutiae
            x, y, ang = m["x"] + dx, m["y"], m["angle"].astype(float)
            ax.scatter(x, y, s=18, facecolors="none", edgecolors=color, linewidths=1.0)
            # angle is CCW with y up; image rows grow downwards
            ax.plot(np.stack([x, x + tick_px * np.cos(ang)]), np.stack([y, y - tick_px * np.sin(ang)]), color=color, linewidth=1.0)
        pairs = np.asarray(match.pairs)
        if pairs.size:
            ma, mb = a.minutiae[pairs[:, 0]], b.minutiae[pairs[:, 1]]
            ax.plot(np.stack([ma["x"], mb["x"] + offset_b]), np.stack([ma["y"], mb["y"]]), color="lime", linewidth=1.0, alpha=0.8)
        from .calibration import format_fmr

        fmr = format_fmr(match.fmr, getattr(match, "fmr_is_bound", False), digits=1)
        ax.set_title(f"{names[0]} vs {names[1]}: score {match.score:.3f}, est. FMR {fmr}, "
                     f"{len(pairs)} minutiae pairs agree under one alignment", fontsize=9)
        ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        out = Path(path)
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
