"""Tests of biomatch.scoring: MCC local similarity, LSS-R, verify / compare_many."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import biomatch as bm
from biomatch import descriptors as d
from biomatch import scoring as sc
from biomatch.errors import BiomatchError, TemplateError
from biomatch.template import Template, make_minutiae

from test_descriptors import _rigid, random_template, unpack  # noqa: E402 (tests dir is on sys.path)

REPO = Path(__file__).resolve().parents[1]


def impression(master: Template, rng, *, keep=0.8, spurious=0.1, jitter_px=3.0, jitter_deg=6.0, size=600):
    """A mated impression of ``master``: rigid motion, jitter, missing and spurious minutiae."""
    m = master.minutiae
    n = len(m)
    sel = rng.random(n) < keep
    x, y, a = m["x"][sel].astype(float), m["y"][sel].astype(float), m["angle"][sel].astype(float)
    x = x + rng.normal(0, jitter_px, x.size)
    y = y + rng.normal(0, jitter_px, y.size)
    a = a + np.radians(rng.normal(0, jitter_deg, a.size))
    k = int(round(spurious * n))
    x = np.concatenate([x, rng.uniform(20, master.width - 20, k)])
    y = np.concatenate([y, rng.uniform(20, master.height - 20, k)])
    a = np.concatenate([a, rng.uniform(0, 2 * np.pi, k)])
    t = Template(make_minutiae(np.clip(x, 0, master.width), np.clip(y, 0, master.height), a), master.width, master.height)
    return _rigid(t, rng.uniform(-0.5, 0.5), rng.uniform(-60, 60), rng.uniform(-60, 60), size=size)


# ---------------------------------------------------------------------------
# slow NumPy reference of the whole score
# ---------------------------------------------------------------------------
def _sig(v, mu, tau):
    return 1.0 / (1.0 + np.exp(-tau * (v - mu)))


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def with_quality(t: Template, rng, low=1, high=100) -> Template:
    """``t`` with random minutia qualities in [low, high] (extractor-style, not 0 = unreported)."""
    m = t.minutiae.copy()
    m["quality"] = rng.integers(low, high + 1, len(m))
    return t.replace(minutiae=m)


def reference_weights(t: Template) -> np.ndarray:
    """Overlap weight of each minutia: min(q / 50, 1); all 1 when every quality is 0 (not reported)."""
    q = t.minutiae["quality"].astype(float)
    return np.ones(q.size) if not np.any(q > 0) else np.minimum(q / 50.0, 1.0)


def _valid_rows(f):
    """Valid minutiae in the kernel's row order (by direction, stable)."""
    v = np.flatnonzero(f.valid)
    return v[np.argsort(f.angle[v], kind="stable")]


def reference_local(fa, fb):
    """Local similarity matrix over valid cylinders, rows in kernel order (0 where not matchable)."""
    va, vb = _valid_rows(fa), _valid_rows(fb)
    ba, ma = unpack(fa)
    bb, mb = unpack(fb)
    out = np.zeros((va.size, vb.size))
    for r, i in enumerate(va):
        for c, j in enumerate(vb):
            if math.cos(fa.angle[i] - fb.angle[j]) < 0:
                continue
            m = ma[i] & mb[j]
            if m.sum() < sc._MIN_COMMON_CELLS:
                continue
            x = ((ba[i] ^ bb[j]) & m).sum()
            pa, pb = (ba[i] & m).sum(), (bb[j] & m).sum()
            den = math.sqrt(pa) + math.sqrt(pb)
            if den > 0:
                out[r, c] = max(0.0, 1 - math.sqrt(x) / den)
    return out


def reference_lssr(a: Template, b: Template):
    """LSS-R score and its relaxation candidates: (score, rows of a, rows of b), candidates
    in the kernel's order (decreasing local similarity, one-to-one)."""
    fa, fb = d.encode(a), d.encode(b)
    va, vb = _valid_rows(fa), _valid_rows(fb)
    na, nb = va.size, vb.size
    if na < 2 or nb < 2:
        return 0.0
    gam = reference_local(fa, fb)
    ii, jj = np.nonzero(gam > 0)
    sims = gam[ii, jj]
    order = np.argsort(-sims, kind="stable")
    n_min = min(na, nb)
    chosen, used_a, used_b = [], set(), set()
    for t in order:
        if len(chosen) >= n_min:
            break
        if ii[t] in used_a or jj[t] in used_b:
            continue
        used_a.add(ii[t])
        used_b.add(jj[t])
        chosen.append(t)
    n_r = len(chosen)
    if n_r < 2:
        return 0.0, None, None
    pi, pj = ii[chosen], jj[chosen]
    lam0 = sims[chosen]
    xa, ta = fa.xy[va][pi].astype(float), fa.angle[va][pi].astype(float)
    xb, tb = fb.xy[vb][pj].astype(float), fb.angle[vb][pj].astype(float)
    da = xa[:, None] - xa[None]
    db = xb[:, None] - xb[None]
    d1 = np.abs(np.hypot(da[..., 0], da[..., 1]) - np.hypot(db[..., 0], db[..., 1]))
    d2 = np.abs(_wrap(_wrap(ta[:, None] - ta[None]) - _wrap(tb[:, None] - tb[None])))
    ra = _wrap(ta[:, None] - np.arctan2(da[..., 1], da[..., 0]))
    rb = _wrap(tb[:, None] - np.arctan2(db[..., 1], db[..., 0]))
    d3 = np.abs(_wrap(ra - rb))
    # the kernel reads the sigmoids from tables (distance; cosine of the angle
    # differences) and skips compatibilities whose first factors are below 1e-6
    tab = sc._COMPAT_TABLES
    L = tab.shape[1]
    z1 = np.interp(d1, np.linspace(0, sc.COMPAT_MAX_DISTANCE_PX, L), tab[0])
    z1[d1 >= sc.COMPAT_MAX_DISTANCE_PX] = 0.0
    grid = np.linspace(-1.0, 1.0, L)
    z2 = np.interp(np.cos(d2), grid, tab[1])
    z3 = np.interp(np.cos(d3), grid, tab[2])
    rho = np.where((z1 > 1e-6) & (z2 > 1e-6), z1 * z2 * z3, 0.0)
    # and the tables are the paper's sigmoids, each divided by its value at 0
    (m1, t1), (m2, t2), (m3, t3) = sc.RHO_DISTANCE_PX, sc.RHO_DIRECTION_RAD, sc.RHO_RADIAL_RAD
    exact = _sig(d1, m1, t1) * _sig(d2, m2, t2) * _sig(d3, m3, t3) / (_sig(0, m1, t1) * _sig(0, m2, t2) * _sig(0, m3, t3))
    assert np.all(np.abs(np.where(rho > 0, rho - exact, 0)) < 0.02)
    np.fill_diagonal(rho, 0.0)
    lam = lam0.copy()
    for _ in range(sc.N_RELAX_ITER):
        lam = sc.RELAX_WEIGHT * lam + (1 - sc.RELAX_WEIGHT) * rho @ lam / (n_r - 1)
    mu_p, tau_p = sc.PAIRS_SIGMOID
    n_p = int(sc.MIN_PAIRS + round(_sig(n_min, mu_p, tau_p) * (sc.MAX_PAIRS - sc.MIN_PAIRS)))
    best = np.argsort(-(lam / lam0), kind="stable")[: min(n_p, n_r)]
    return float(lam[best].sum() / n_p), pi, pj


def _inside_hull(points, hull_xy):
    """Points inside (or on) the convex polygon ``hull_xy`` (counter-clockwise, h >= 3)."""
    e = np.roll(hull_xy, -1, axis=0) - hull_xy
    rel = points[:, None, :] - hull_xy[None]
    cross = e[None, :, 0] * rel[..., 1] - e[None, :, 1] * rel[..., 0]
    return np.all(cross >= 0, axis=1)


def reference_global(a: Template, b: Template, pi, pj, agreeing_pairs=None) -> float:
    """The global stage, written out: proposals by single candidate pairs, consensus,
    least-squares refit on the inliers, mutual-nearest-neighbour count, hull overlap.
    ``agreeing_pairs``, a set, receives the m agreeing (minutia of a, minutia of b)."""
    from scipy.spatial import ConvexHull

    fa, fb = d.encode(a), d.encode(b)
    va, vb = _valid_rows(fa), _valid_rows(fb)
    xa, xb = fa.xy[va].astype(float), fb.xy[vb].astype(float)
    ta, tb = fa.angle[va].astype(float), fb.angle[vb].astype(float)
    tol, cos_tol = sc.ALIGN_DISTANCE_PX, math.cos(sc.ALIGN_ANGLE_RAD)
    assert sc.ALIGN_DISTANCE_GROWTH == 0.0  # the reference covers the constant tolerance

    def move(rot, t, x):
        c, s_ = math.cos(rot), math.sin(rot)
        return x @ np.array([[c, s_], [-s_, c]]) + t

    def agree(rot, t):  # (na, nb) agreement under b -> R b + t
        q = move(rot, t, xb)
        dist2 = ((xa[:, None] - q[None]) ** 2).sum(-1)
        dang = np.cos(ta[:, None] - (tb[None] + rot))
        return (dist2 <= tol * tol) & (dang >= cos_tol), dist2

    def pair_motion(i, j):
        rot = ta[i] - tb[j]
        return rot, xa[i] - move(rot, 0.0, xb[j : j + 1])[0]

    best_cons, best_q = 0, -1
    for q in range(min(sc.ALIGN_CANDIDATES, len(pi))):
        ok, _ = agree(*pair_motion(pi[q], pj[q]))
        cons = int(ok[pi, pj].sum())
        if cons > best_cons:
            best_cons, best_q = cons, q
    if best_q < 0:
        return 0.0
    rot, t = pair_motion(pi[best_q], pj[best_q])
    ok, _ = agree(rot, t)
    inl = ok[pi, pj]
    if inl.sum() >= 2:  # Procrustes without scale on the inlier pairs
        u = xa[pi[inl]] - xa[pi[inl]].mean(0)
        v = xb[pj[inl]] - xb[pj[inl]].mean(0)
        rot = math.atan2((u[:, 1] * v[:, 0] - u[:, 0] * v[:, 1]).sum(), (u * v).sum())
        t = xa[pi[inl]].mean(0) - move(rot, 0.0, xb[pj[inl]].mean(0, keepdims=True))[0]
    ok, dist2 = agree(rot, t)
    dist2 = np.where(ok, dist2, np.inf)
    nn_a = np.where(ok.any(1), dist2.argmin(1), -1)
    nn_b = np.where(ok.any(0), dist2.argmin(0), -1)
    mutual = [(int(va[nn_b[j]]), int(vb[j])) for j in range(xb.shape[0]) if nn_b[j] >= 0 and nn_a[nn_b[j]] == j]
    m = len(mutual)  # a count, not weighted
    if agreeing_pairs is not None and m:
        agreeing_pairs.update(mutual)
    if m == 0:
        return 0.0
    qb = move(rot, t, xb)
    wa, wb = reference_weights(a)[va], reference_weights(b)[vb]
    n_ov_a = float((wa * _inside_hull(xa, qb[ConvexHull(xb).vertices])).sum())  # quality-weighted overlap
    n_ov_b = float((wb * _inside_hull(qb, xa[ConvexHull(xa).vertices])).sum())
    n0 = sc.OVERLAP_MIN_MINUTIAE
    return m * m / (max(n_ov_a, m, n0) * max(n_ov_b, m, n0))


def reference_score(a: Template, b: Template) -> float:
    s_local, pi, pj = reference_lssr(a, b)
    if s_local <= 0.0:
        return 0.0
    g = reference_global(a, b, pi, pj)
    return s_local**sc.FUSION_LOCAL_EXP * g**sc.FUSION_GLOBAL_EXP


# ---------------------------------------------------------------------------
# kernels against the reference
# ---------------------------------------------------------------------------
def test_local_similarity_kernel_matches_reference():
    from biomatch._scoring_kernels import local_similarities

    rng = np.random.default_rng(10)
    a = random_template(rng, n=20)
    b = impression(a, rng)
    fa, fb = d.encode(a), d.encode(b)
    ra, rb = sc._rows(fa), sc._rows(fb)
    cap = len(ra[0]) * len(rb[0])
    sim, ci, cj = np.zeros(cap), np.zeros(cap, np.int32), np.zeros(cap, np.int32)
    row_start, row_best = np.zeros(len(ra[0]) + 1, np.int32), np.zeros(len(ra[0]), np.int32)
    n = local_similarities(*ra[:4], *rb[:4], d.PLANE_WORDS, sc._MIN_COMMON_CELLS, sim, ci, cj, row_start, row_best)
    got = np.zeros((len(ra[0]), len(rb[0])))
    got[ci[:n], cj[:n]] = sim[:n]
    np.testing.assert_array_equal(ra[5], _valid_rows(fa))
    ref = reference_local(fa, fb)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert n > 0
    # rows of a in order, each row's span and its most similar pair (the first on ties)
    assert np.all(np.diff(ci[:n]) >= 0) and row_start[-1] == n
    for i in range(len(ra[0])):
        lo, hi = row_start[i], row_start[i + 1]
        assert np.all(ci[lo:hi] == i)
        assert row_best[i] == (lo + int(np.argmax(sim[lo:hi])) if hi > lo else -1)


@pytest.mark.parametrize("one_to_one", [True, False])
def test_pair_selection_matches_sorted_greedy_walk(one_to_one):
    """_select_pairs takes pairs in the order of a stable sort by decreasing similarity (ties
    in candidate order), skipping, one-to-one, pairs whose minutiae are taken: checked on
    candidates with many tied similarities."""
    from biomatch._scoring_kernels import _select_pairs

    rng = np.random.default_rng(18)
    for _ in range(30):
        na, nb = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        keep = rng.random((na, nb)) < 0.6
        ci, cj = (a.astype(np.int32) for a in np.nonzero(keep))  # by row of a, as local_similarities writes them
        n = ci.size
        sim = rng.integers(1, 6, n) / 8.0  # few levels: many ties
        row_start = np.searchsorted(ci, np.arange(na + 1)).astype(np.int32)
        row_best = np.array(
            [lo + int(np.argmax(sim[lo:hi])) if hi > lo else -1 for lo, hi in zip(row_start[:-1], row_start[1:])], np.int32
        )
        k = int(rng.integers(1, max(na, nb) + 3))
        sel = np.zeros(max(n, 1), np.int32)
        m = _select_pairs(
            sim, cj, na, nb, k, one_to_one, row_start, row_best, sel, np.zeros(nb, np.bool_), np.zeros(max(n, 1), np.bool_),
            np.zeros(na), np.zeros(na, np.int32),
        )
        want, used_a, used_b = [], set(), set()
        for t in sorted(range(n), key=lambda t: (-sim[t], t)):
            if len(want) == k:
                break
            if one_to_one and (ci[t] in used_a or cj[t] in used_b):
                continue
            used_a.add(ci[t])
            used_b.add(cj[t])
            want.append(t)
        assert sel[:m].tolist() == want


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_score_kernel_matches_reference(seed):
    rng = np.random.default_rng(seed)
    a = random_template(rng, n=22)
    b = impression(a, rng) if seed != 13 else random_template(rng, n=25)
    assert bm.verify(a, b).score == pytest.approx(reference_score(a, b), abs=1e-9)
    # with extractor qualities (the weighted overlap), one template or both
    aq, bq = with_quality(a, rng), with_quality(b, rng)
    for x, y in ((aq, bq), (aq, b), (a, bq)):
        assert bm.verify(x, y).score == pytest.approx(reference_score(x, y), abs=1e-9)


def test_global_stage_kernel_matches_reference_and_bounds_the_score():
    """The kernel's global overlap score equals the NumPy reference; the final score never
    exceeds the LSS-R score (G <= 1) and is positive for mated impressions."""
    from biomatch._scoring_kernels import score_one

    rng = np.random.default_rng(16)
    for k in range(4):
        a = random_template(rng, n=28)
        b = impression(a, rng, keep=0.7) if k < 3 else random_template(rng, n=28)
        if k % 2:
            a, b = with_quality(a, rng), with_quality(b, rng)
        ra, rb = sc._rows(d.encode(a)), sc._rows(d.encode(b))
        pairs = np.zeros((sc.MAX_PAIRS + 1, 2), np.int32)
        agreed = np.empty(len(rb[0]), np.int32)
        score, s_local, _ = score_one(
            *ra[:5], *ra[6:], *rb[:5], *rb[6:], d.PLANE_WORDS, sc._MIN_COMMON_CELLS, sc._PARAMS, sc._COMPAT_TABLES,
            sc._GPARAMS, pairs, agreed,
        )
        ref_local, pi, pj = reference_lssr(a, b)
        assert s_local == pytest.approx(ref_local, abs=1e-9)
        g = (score / s_local) ** (1.0 / sc.FUSION_GLOBAL_EXP) if s_local > 0 else 0.0
        ref_pairs = set()
        assert g == pytest.approx(reference_global(a, b, pi, pj, ref_pairs), abs=1e-7)
        # the pairs the score rests on (Match.pairs) are the reference's m agreeing pairs
        assert {tuple(p) for p in bm.verify(a, b).pairs.tolist()} == ref_pairs
        assert 0.0 <= score <= s_local + 1e-12
        if k < 3:
            assert g > 0.3  # most kept minutiae agree under one alignment


def test_low_quality_spurious_minutia_in_the_overlap_costs_less():
    """A spurious minutia inside the overlap lowers the score (it enlarges nB); at low quality
    it lowers it less than at full quality. Everything else (cylinders, LSS-R, m) is the same."""
    rng = np.random.default_rng(18)
    a = with_quality(random_template(rng, n=30), rng, 60, 100)
    # spurious minutiae of its own, so that b's overlap count exceeds m (not held at the floor max(nB, m))
    b = with_quality(impression(a, rng, keep=0.8, spurious=0.3), rng, 60, 100)
    xy = np.stack([b.minutiae["x"], b.minutiae["y"]], 1).astype(float)
    cx, cy = xy.mean(0)  # inside b's hull, far from the border, so inside the overlap
    far = np.sqrt(((xy - (cx, cy)) ** 2).sum(1)).min()

    def with_spurious(q):
        extra = make_minutiae([cx], [cy], [float(b.minutiae["angle"][0]) + 2.0], quality=[q])
        return b.replace(minutiae=np.concatenate([b.minutiae, extra]))

    s0 = bm.verify(a, b).score
    s_hi, s_lo = bm.verify(a, with_spurious(100)).score, bm.verify(a, with_spurious(5)).score
    assert s_hi < s_lo < s0
    assert bm.verify(with_spurious(5), a).score == pytest.approx(s_lo, abs=0.02)  # symmetric
    assert far > 0  # (a new point, not a duplicate of an existing minutia)


def test_unreported_qualities_give_weight_one():
    """All-zero qualities (ISO/ANSI "not reported") weigh 1, as do qualities >= QUALITY_FULL_WEIGHT;
    a mix weighs min(q / 50, 1), 0 included."""
    np.testing.assert_array_equal(sc.overlap_weights(np.zeros(5)), np.ones(5))
    assert sc.overlap_weights(np.zeros(0)).shape == (0,)
    np.testing.assert_allclose(sc.overlap_weights([0, 10, 25, 50, 80, 100]), [0, 0.2, 0.5, 1, 1, 1])
    rng = np.random.default_rng(19)
    a = random_template(rng, n=30)
    b = impression(a, rng)
    assert not a.minutiae["quality"].any() and not b.minutiae["quality"].any()
    full = [with_quality(t, rng, sc.QUALITY_FULL_WEIGHT, 100) for t in (a, b)]
    assert bm.verify(a, b).score == bm.verify(*full).score
    packed = sc.pack([b, full[1]])
    np.testing.assert_array_equal(packed.overlap_weight, np.ones(packed.overlap_weight.size))


def test_packed_weights_round_trip_the_gallery_feature_store():
    from biomatch.gallery import FeatureStore

    rng = np.random.default_rng(9)
    t = with_quality(random_template(rng, n=25), rng)
    p = sc.pack([t])
    assert p.overlap_weight.min() < 1.0
    q = FeatureStore._load(FeatureStore._dump(p))
    for name in ("overlap_weight", "hull_rank", "geo", "offsets"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
    np.testing.assert_array_equal(sc.score_packed(t, q), sc.score_packed(t, p))


def test_hull_rank_orders_the_hull_counter_clockwise():
    rng = np.random.default_rng(17)
    xy = rng.uniform(0, 100, (30, 2))
    rank = sc._hull_rank(xy)
    hull = xy[np.argsort(np.where(rank >= 0, rank, 10**6))][: int((rank >= 0).sum())]
    e = np.roll(hull, -1, axis=0) - hull
    assert np.all(e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0] > 0)
    assert _inside_hull(xy, hull).all()
    assert np.all(sc._hull_rank(xy[:2]) == -1)


# ---------------------------------------------------------------------------
# behaviour
# ---------------------------------------------------------------------------
def test_self_match_is_maximal_and_scores_in_unit_interval():
    rng = np.random.default_rng(20)
    a = random_template(rng)
    others = [impression(a, rng) for _ in range(3)] + [random_template(rng) for _ in range(3)]
    self_score = bm.verify(a, a).score
    assert self_score == pytest.approx(1.0)
    scores = bm.compare_many(a, others)
    assert np.all((scores >= 0) & (scores <= self_score))


def test_golden_genuine_and_impostor_pairs():
    """Mated impressions (rigid motion, jitter, 20% missing, 10% spurious) beat every impostor."""
    rng = np.random.default_rng(21)
    masters = [random_template(rng, n=35) for _ in range(6)]
    gen = [bm.verify(impression(m, rng), impression(m, rng)).score for m in masters]
    imp = [bm.verify(impression(m1, rng), impression(m2, rng)).score for i, m1 in enumerate(masters) for m2 in masters[i + 1 :]]
    # raw LSS-R scores are small (relaxation averages over all candidate pairs):
    # real impostors stay below ~0.03, genuine pairs mostly above 0.05
    assert max(imp) < 0.03
    assert min(gen) > 2 * max(imp)


def test_golden_pairs_from_the_synthetic_sample():
    """Images of data/synthetic (made by biomatch.synthetic) through extract and verify."""
    folder = REPO / "data" / "synthetic"
    if not (folder / "1_1.png").exists():
        pytest.skip("data/synthetic sample not present")
    t = {(f, i): bm.extract(folder / f"{f}_{i}.png") for f in (1, 2, 3) for i in (1, 2)}
    gen = [bm.verify(t[f, 1], t[f, 2]).score for f in (1, 2, 3)]
    imp = [bm.verify(t[f, i], t[g, j]).score for f in (1, 2, 3) for g in (1, 2, 3) if f < g for i in (1, 2) for j in (1, 2)]
    assert min(gen) > max(imp)


def test_symmetric_within_tolerance():
    rng = np.random.default_rng(22)
    for _ in range(4):
        a = random_template(rng)
        b = impression(a, rng)
        assert bm.verify(a, b).score == pytest.approx(bm.verify(b, a).score, abs=0.02)


@settings(max_examples=8, deadline=None)
@given(angle=st.floats(-math.pi / 6, math.pi / 6), dx=st.floats(-150, 150), dy=st.floats(-150, 150))
def test_rigid_motion_leaves_score_unchanged(angle, dx, dy):
    # MCC only pairs minutiae whose directions differ by at most pi/2, so the
    # invariance holds while the total rotation between the prints (here up to
    # 0.5 rad from impression() plus this one) stays well inside that gate
    rng = np.random.default_rng(23)
    a = random_template(rng)
    b = impression(a, rng)
    s0 = bm.verify(a, b).score
    s1 = bm.verify(a, _rigid(b, angle, dx, dy, size=1200)).score
    assert s1 == pytest.approx(s0, abs=0.03)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), keep=st.floats(0.2, 1.0))
def test_removing_minutiae_never_beats_the_self_score(seed, keep):
    rng = np.random.default_rng(seed)
    a = random_template(rng, n=25)
    sel = rng.random(len(a)) < keep
    sub = a.replace(minutiae=a.minutiae[sel])  # boolean indexing copies
    assert bm.verify(sub, a).score <= bm.verify(a, a).score + 1e-12


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_one_minutia_templates_score_zero(n):
    rng = np.random.default_rng(24)
    full = random_template(rng)
    tiny = full.replace(minutiae=full.minutiae[:n].copy())  # a read-only slice trips Template (template.py)
    for a, b in ((tiny, full), (full, tiny), (tiny, tiny)):
        m = bm.verify(a, b)
        assert m.score == 0.0 and m.pairs.shape == (0, 2)
    np.testing.assert_array_equal(bm.compare_many(tiny, [full, tiny]), [0.0, 0.0])
    np.testing.assert_array_equal(bm.compare_many(full, [tiny]), [0.0])


def test_match_result_object():
    rng = np.random.default_rng(25)
    a = random_template(rng)
    b = impression(a, rng)
    m = bm.verify(a, b)
    assert isinstance(m, bm.Match)
    assert m.pairs.dtype == np.int64 and m.pairs.ndim == 2 and m.pairs.shape[1] == 2
    assert m.n_pairs == len(m.pairs) > 0
    assert np.all(m.pairs[:, 0] < len(a)) and np.all(m.pairs[:, 1] < len(b))
    assert 0.0 <= m.fmr <= 1.0
    with pytest.raises(Exception):
        m.score = 0.5  # frozen
    doc = m.to_dict()
    assert doc["matcher_version"] == sc.MATCHER_VERSION and doc["n_pairs"] == m.n_pairs


def test_fmr_decreases_with_score():
    lo, hi = sc.estimated_fmr(0.02), sc.estimated_fmr(0.5)
    assert 0 <= hi <= lo <= 1


def test_compare_many_equals_verify_and_packed_subsets():
    rng = np.random.default_rng(26)
    a = random_template(rng)
    gallery = [impression(a, rng) for _ in range(3)] + [random_template(rng) for _ in range(4)]
    many = bm.compare_many(a, gallery)
    one = np.array([bm.verify(a, t).score for t in gallery])
    np.testing.assert_allclose(many, one, atol=1e-12)
    packed = sc.pack([d.encode(t) for t in gallery])
    assert len(packed) == len(gallery)
    np.testing.assert_allclose(sc.score_packed(a, packed, subset=[5, 0, 2]), many[[5, 0, 2]], atol=1e-12)
    assert sc.score_packed(d.encode(a), packed, subset=np.array([], dtype=int)).shape == (0,)
    # pairs from packed rows (a gallery's candidates) are verify's, without re-encoding
    for t in range(len(gallery)):
        score, pairs = sc.pairs_packed(a, packed, t)
        m = bm.verify(a, gallery[t])
        assert score == pytest.approx(m.score, abs=1e-12)
        np.testing.assert_array_equal(pairs, m.pairs)
    with pytest.raises(BiomatchError, match="^t:"):
        sc.pairs_packed(a, packed, len(gallery))


def test_bad_inputs_raise_named_errors():
    rng = np.random.default_rng(27)
    a = random_template(rng)
    with pytest.raises(TemplateError, match="^b:"):
        bm.verify(a, "b.iso")
    with pytest.raises(TemplateError, match="probe"):
        bm.compare_many(None, [a])
    with pytest.raises(TemplateError, match=r"templates\[1\]"):
        bm.compare_many(a, [a, 3])
    packed = sc.pack([a])
    with pytest.raises(BiomatchError, match="subset"):
        sc.score_packed(a, packed, subset=[1])
    with pytest.raises(BiomatchError, match="subset"):
        sc.score_packed(a, packed, subset=[[0]])
    with pytest.raises(BiomatchError, match="packed"):
        sc.score_packed(a, [a])


def test_cli_verify_templates_json_and_plot(tmp_path, capsys):
    import json

    from biomatch.cli import main

    rng = np.random.default_rng(28)
    a = random_template(rng)
    b = impression(a, rng)
    pa, pb = tmp_path / "a.bmt", tmp_path / "b.iso"
    pa.write_bytes(a.to_bytes())
    pb.write_bytes(bm.write_iso(b))
    png = tmp_path / "pairs.png"
    assert main(["verify", str(pa), str(pb), "--json", "--plot", str(png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["score"] == pytest.approx(bm.verify(bm.load_template(pa), bm.load_template(pb)).score, abs=1e-6)
    assert doc["n_pairs"] == len(doc["pairs"]) > 0 and doc["fmr"] is not None
    assert png.stat().st_size > 1000
    assert main(["verify", str(pa), str(tmp_path / "missing.iso")]) == 1
    assert "missing.iso" in capsys.readouterr().err


def test_kernel_shortcuts_leave_out_only_what_scores_nothing():
    """The kernels' exact shortcuts: the distance term is <= 1e-6 from _lut_reach on (so the
    pairs left out there would have been dropped) and it is > 5e-7 up to within two grid steps
    of the reach (nothing much is left in); the square-root table is math.sqrt of each count."""
    from biomatch._scoring_kernels import _lut_distance, _lut_reach, sqrt_table

    scale = sc._PARAMS[2]
    reach = _lut_reach(sc._COMPAT_TABLES, scale)
    dist = np.linspace(0.0, 2 * sc.COMPAT_MAX_DISTANCE_PX, 20001)
    z = np.array([_lut_distance(sc._COMPAT_TABLES, v, scale) for v in dist])
    assert np.all(z[dist >= reach] <= 1e-6)
    assert dist[z > 1e-6].max() < reach <= dist[z > 5e-7].max() + 2.0 / scale
    root = sqrt_table(np.int64(d_words := sc._desc.DESCRIPTOR_WORDS))
    assert root.shape == (64 * d_words + 1,)
    assert all(root[k] == math.sqrt(k) for k in range(root.size))
