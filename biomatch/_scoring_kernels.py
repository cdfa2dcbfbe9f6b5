"""Numba kernels of :mod:`biomatch.scoring`: MCC local similarities and LSS-R.

Private: arrays and scalars in, nothing validated. Only ``biomatch.scoring``
calls them. Every kernel is ``nogil`` so threads scale over cores.

Layout of a packed template set (only valid cylinders are packed):

- ``bits``  uint64 (N, words) cylinder bits (cell-major, direction layers inside),
- ``mask``  uint64 (N, plane_words) valid cells,
- ``maskx`` uint64 (N, words) the validity of each bit of ``bits``,
- ``geo``   float64 (N, 4): x, y (500 ppi, y up), cos(theta), sin(theta),
- ``theta`` float64 (N,),
- ``offsets`` int64 (T + 1,): template t owns rows offsets[t]:offsets[t+1].
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._scoring_global import gather_hull, global_overlap_score, x_grid


@intrinsic
def _popcount(typingctx, x):
    """Hardware population count of a uint64 (llvm.ctpop); numba has no builtin for it."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


#: The hardware population count, for the other kernel modules (:mod:`biomatch._ivf_scan`).
popcount = _popcount


@njit(cache=True, nogil=True, error_model="numpy")
def popcount_rows(a):
    """Number of set bits of each row of a uint64 (n, w) array -> int64 (n,)."""
    out = np.zeros(a.shape[0], dtype=np.int64)
    for i in range(a.shape[0]):
        c = 0
        for w in range(a.shape[1]):
            c += _popcount(a[i, w])
        out[i] = c
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _wrap_pi(a):
    two_pi = 2.0 * math.pi
    a = (a + math.pi) % two_pi
    if a < 0.0:
        a += two_pi
    return a - math.pi


@njit(cache=True, nogil=True, error_model="numpy")
def sqrt_table(n_words):
    """float64 (64 n_words + 1,): the square root of every bit count of a cylinder row. The
    same values as math.sqrt of the count (both correctly rounded), read instead of computed."""
    return np.sqrt(np.arange(64 * n_words + 1).astype(np.float64))


@njit(cache=True, nogil=True, error_model="numpy")
def local_similarities(
    a_bits, a_mask, a_maskx, a_geo, b_bits, b_mask, b_maskx, b_geo, plane_words, min_common_cells, out_sim, out_i, out_j,
    row_start, row_best,
):
    """:func:`local_similarities_rooted` with its own square-root table."""
    return local_similarities_rooted(
        a_bits, a_mask, a_maskx, a_geo, b_bits, b_mask, b_maskx, b_geo, plane_words, min_common_cells, out_sim, out_i,
        out_j, row_start, row_best, sqrt_table(a_bits.shape[1]),
    )


@njit(cache=True, nogil=True, error_model="numpy")
def local_similarities_rooted(
    a_bits, a_mask, a_maskx, a_geo, b_bits, b_mask, b_maskx, b_geo, plane_words, min_common_cells, out_sim, out_i, out_j,
    row_start, row_best, root,
):
    """MCC bit-based local similarity of every matchable cylinder pair.

    A pair is matchable when the directions differ by at most pi/2 and the
    cylinders share at least ``min_common_cells`` valid cells. Similarity is
    1 - sqrt(|a^b|) / (sqrt(|a|) + sqrt(|b|)), every count taken over the
    common valid cells. Writes the pairs with similarity > 0 into ``out_*``
    (capacity na * nb), by row of a then row of b, and returns their number.
    For :func:`_select_pairs`: row i's pairs are ``row_start[i]:row_start[i + 1]``
    (shape (na + 1,)) and ``row_best[i]`` is its most similar one (the first on
    ties; -1 when none). ``root``: :func:`sqrt_table` of the row width (square roots of
    counts are looked up).
    """
    na = a_bits.shape[0]
    nb = b_bits.shape[0]
    n_words = a_bits.shape[1]
    count = 0
    for i in range(na):
        ca = a_geo[i, 2]
        sa = a_geo[i, 3]
        row_start[i] = count
        best = -1
        best_s = 0.0
        for j in range(nb):
            if ca * b_geo[j, 2] + sa * b_geo[j, 3] < 0.0:  # |d theta| > pi/2
                continue
            common = 0
            for w in range(plane_words):
                common += _popcount(a_mask[i, w] & b_mask[j, w])
            if common < min_common_cells:
                continue
            # over the common valid cells: |a| = pa, |b| = pb, |a^b| = pa + pb - 2|a&b|
            # (value bits only occur in their own valid cells); contiguous words, vectorisable
            ab = a_bits[i]
            bb = b_bits[j]
            amx = a_maskx[i]
            bmx = b_maskx[j]
            pa = 0
            pb = 0
            pab = 0
            for w in range(n_words):
                av = ab[w]
                bv = bb[w]
                pa += _popcount(av & bmx[w])
                pb += _popcount(bv & amx[w])
                pab += _popcount(av & bv)
            x = pa + pb - 2 * pab
            den = root[pa] + root[pb]
            if den <= 0.0:
                continue
            s = 1.0 - root[x] / den
            if s <= 0.0:
                continue
            out_sim[count] = s
            out_i[count] = i
            out_j[count] = j
            if s > best_s:
                best_s = s
                best = count
            count += 1
        row_best[i] = best
    row_start[na] = count
    return count


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid(v, mu, tau):
    return 1.0 / (1.0 + math.exp(-tau * (v - mu)))


@njit(cache=True, nogil=True, error_model="numpy")
def _row_best(sim, cand_j, lo, hi, used_b, taken, one_to_one):
    """Best remaining candidate among lo:hi (one row of a): the highest similarity, the first
    one on ties; skips taken candidates and, with ``one_to_one``, used columns; -1 when none."""
    bt = -1
    bv = 0.0
    # written without branches (a skipped candidate counts 0, which never wins): which
    # candidates are skipped, and which is best, are data-dependent and mispredict
    for t in range(lo, hi):
        skip = used_b[cand_j[t]] if one_to_one else taken[t]
        v = sim[t] * (1.0 - skip)
        better = v > bv
        bt = t if better else bt
        bv = v if better else bv
    return bt


@njit(cache=True, nogil=True, error_model="numpy")
def _select_pairs(sim, cand_j, na, nb, k, one_to_one, row_start, row_best, sel, used_b, taken, row_sim, row_col):
    """Up to k candidate pairs by decreasing similarity into sel; returns how many.

    The order is that of sorting the candidates by decreasing similarity, ties
    in candidate order; with ``one_to_one`` a pair is skipped when one of its
    minutiae is already taken (greedy assignment). Candidates come by row of a
    with each row's best (``row_start``, ``row_best`` from
    :func:`local_similarities`; similarities are > 0), so each of the k steps
    takes the best of the rows' bests (ties: the lower row, i.e. the earlier
    candidate), the rows whose best column was taken by the previous step being
    refreshed on the way.
    ``row_best`` is updated in place. Scratch: taken (n,) bool, row_sim (na,)
    float, row_col (na,) int."""
    for j in range(nb):
        used_b[j] = False
    for i in range(na):
        r = row_best[i]
        row_sim[i] = sim[r] if r >= 0 else -1.0
        row_col[i] = cand_j[r] if r >= 0 else -1
        if not one_to_one:
            for t in range(row_start[i], row_start[i + 1]):
                taken[t] = False
    m = 0
    jt = -1  # the column taken by the last step (one-to-one): rows whose best it was are refreshed
    while m < k:
        bi = -1
        bv = 0.0
        for i in range(na):
            if row_col[i] == jt and jt >= 0:
                r = _row_best(sim, cand_j, row_start[i], row_start[i + 1], used_b, taken, True)
                row_best[i] = r
                row_sim[i] = sim[r] if r >= 0 else -1.0
                row_col[i] = cand_j[r] if r >= 0 else -1
            v = row_sim[i]
            better = v > bv  # branch-free argmax (the first of equals)
            bi = i if better else bi
            bv = v if better else bv
        if bi < 0:
            break
        bt = row_best[bi]
        sel[m] = bt
        m += 1
        if one_to_one:
            jt = row_col[bi]
            used_b[jt] = True
            row_sim[bi] = -1.0  # the row is used
            row_col[bi] = -1
        else:
            taken[bt] = True
            r = _row_best(sim, cand_j, row_start[bi], row_start[bi + 1], used_b, taken, False)
            row_best[bi] = r
            row_sim[bi] = sim[r] if r >= 0 else -1.0
            row_col[bi] = cand_j[r] if r >= 0 else -1
    return m


@njit(cache=True, nogil=True, error_model="numpy")
def _lut_distance(luts, d, scale):
    """Row 0 of ``luts`` at distance ``d`` (index = d * scale), linear, 0 past the end."""
    x = d * scale
    n = luts.shape[1]
    if x >= n - 1:
        return 0.0
    i = int(x)
    f = x - i
    return luts[0, i] + f * (luts[0, i + 1] - luts[0, i])


@njit(cache=True, nogil=True, error_model="numpy")
def _lut_cos(luts, row, c):
    """Row ``row`` of ``luts`` at cosine ``c`` in [-1, 1] (clamped), linear."""
    n = luts.shape[1]
    x = (c + 1.0) * 0.5 * (n - 1)
    if x <= 0.0:
        return luts[row, 0]
    if x >= n - 1:
        return luts[row, n - 1]
    i = int(x)
    f = x - i
    return luts[row, i] + f * (luts[row, i + 1] - luts[row, i])


@njit(cache=True, nogil=True, error_model="numpy")
def _lut_reach(luts, scale):
    """A distance difference (px) from which :func:`_lut_distance` is surely <= 1e-6: one grid
    step past the first grid point from which the (decreasing) table stays <= 5e-7 (values
    interpolated between such points are < 1e-6), plus a relative margin for rounding; the
    table's end when there is none."""
    n = luts.shape[1]
    lo = 0
    hi = n - 1  # binary search of the first index g with luts[0, g] <= 5e-7 (the table decreases)
    if luts[0, hi] > 5e-7:
        return (n - 1) / scale
    while lo < hi:
        mid = (lo + hi) // 2
        if luts[0, mid] <= 5e-7:
            hi = mid
        else:
            lo = mid + 1
    return min(lo + 1, n - 1) / scale * (1.0 + 1e-9)


@njit(cache=True, nogil=True, error_model="numpy")
def _lut_gate(luts, row):
    """A cosine below which :func:`_lut_cos` of ``row`` is surely <= 1e-6: the grid point
    before the table first exceeds 5e-7 (values between two grid points at most 5e-7 are
    interpolated to < 1e-6), less a margin for rounding; -2 when there is none."""
    n = luts.shape[1]
    g = 0
    while g < n and luts[row, g] <= 5e-7:
        g += 1
    if g == 0:
        return -2.0
    return 2.0 * (g - 1) / (n - 1) - 1.0 - 1e-9


@njit(cache=True, nogil=True, error_model="numpy")
def lssr_score(
    a_geo,
    a_theta,
    b_geo,
    b_theta,
    n_cand,
    cand_sim,
    cand_i,
    cand_j,
    na,
    nb,
    params,
    luts,
    row_start,
    row_best,
    sel,
    used_b,
    taken,
    row_sim,
    row_col,
    rho,
    rho_k,
    rho_n,
    lam,
    lam_new,
    dcos,
    dsin,
    cg,
    dir_gate,
    out_pairs,
):
    """LSS-R consolidation: relaxation over the top min(na, nb) pairs, score over the nP most efficient.

    ``params``: float64 [n_rel, w_r, d1_scale, min_np, max_np, mu_p, tau_p, one_to_one].
    ``luts``: float64 (3, L) compatibility sigmoids, each divided by its value
    at 0: row 0 by distance difference (index = d * d1_scale), rows 1 and 2
    (direction and radial-angle difference) by the cosine of the difference
    over [-1, 1].
    ``dir_gate``: :func:`_lut_gate` of row 1. ``cg`` (n_r, 8) receives the
    candidates' minutiae (a's x, y, cos, sin, then b's), for the global stage.
    Writes the nP selected pairs (row indices into a and b) to out_pairs and
    returns (score, number of pairs written, number of relaxation candidates
    ``n_r``: ``sel[:n_r]`` indexes them, by decreasing local similarity).
    """
    n_rel = int(params[0])
    w_r = params[1]
    d1_scale = params[2]
    min_np = params[3]
    max_np = params[4]
    n_min = min(na, nb)
    n_p = int(min_np + round(_sigmoid(n_min, params[5], params[6]) * (max_np - min_np)))
    n_r = _select_pairs(
        cand_sim, cand_j, na, nb, n_min, params[7] > 0.0, row_start, row_best, sel, used_b, taken, row_sim, row_col
    )
    if n_r < 2 or n_p < 1:
        return 0.0, 0, n_r
    one_to_one = params[7] > 0.0
    # the candidates' minutiae side by side (a: x, y, cos, sin; b: the same), and per pair the
    # unit vector of the direction difference theta_a - theta_b
    for r in range(n_r):
        i = cand_i[sel[r]]
        j = cand_j[sel[r]]
        for q in range(4):
            cg[r, q] = a_geo[i, q]
            cg[r, 4 + q] = b_geo[j, q]
        dcos[r] = a_geo[i, 2] * b_geo[j, 2] + a_geo[i, 3] * b_geo[j, 3]
        dsin[r] = a_geo[i, 3] * b_geo[j, 2] - a_geo[i, 2] * b_geo[j, 3]
    # pair compatibility rho(r, k) (zero diagonal; the radial-angle term is seen from r):
    # product of the tabulated sigmoids of the distance difference, of the
    # relative-direction difference and of the radial-angle difference; the
    # angle terms are looked up by the cosine of the difference (no atan2).
    # Below the cosine ``dir_gate`` the direction term is at most 1e-6 (see _lut_gate): skipped
    # rho is kept by row as its nonzero entries in increasing k (rho[r, :rho_n[r]], columns
    # rho_k[r, :rho_n[r]]): row r gets its k < r entries while the outer loop is at k, then its
    # k > r ones, so appending keeps them in order
    for r in range(n_r):
        rho_n[r] = 0
    near = row_col  # scratch (na >= n_r), free once the pairs are selected
    reach = _lut_reach(luts, d1_scale)
    reach2x2 = 2.0 * reach * reach
    for r in range(n_r):
        dcr = dcos[r]
        dsr = dsin[r]
        # the k > r past the direction gate, in increasing k, gathered without a branch (the
        # gate passes about one pair in four, at random: a branch on it mispredicts)
        n_near = 0
        for k in range(r + 1, n_r):
            near[n_near] = k
            n_near += dcr * dcos[k] + dsr * dsin[k] >= dir_gate
        # and of those, the pairs whose distances may differ by less than ``reach`` (beyond
        # it the distance term is surely <= 1e-6, see _lut_reach), from the squared lengths:
        # |la - lb| >= |la^2 - lb^2| / sqrt(2 (la^2 + lb^2)), so no square root is needed to
        # leave out the many pairs whose distances differ by much
        n_close = 0
        for q in range(n_near):
            k = near[q]
            dxa = cg[r, 0] - cg[k, 0]
            dya = cg[r, 1] - cg[k, 1]
            dxb = cg[r, 4] - cg[k, 4]
            dyb = cg[r, 5] - cg[k, 5]
            la2 = dxa * dxa + dya * dya
            lb2 = dxb * dxb + dyb * dyb
            diff = la2 - lb2
            near[n_close] = k
            n_close += diff * diff < reach2x2 * (la2 + lb2)
        for q in range(n_close):
            k = near[q]
            v = 0.0
            v2 = 0.0
            cdir = dcr * dcos[k] + dsr * dsin[k]
            if one_to_one or (cand_i[sel[k]] != cand_i[sel[r]] and cand_j[sel[k]] != cand_j[sel[r]]):
                # the direction term first: it needs no square root and rejects most pairs
                z2 = _lut_cos(luts, 1, cdir)
                if z2 > 1e-6:
                    dxa = cg[r, 0] - cg[k, 0]
                    dya = cg[r, 1] - cg[k, 1]
                    dxb = cg[r, 4] - cg[k, 4]
                    dyb = cg[r, 5] - cg[k, 5]
                    la = math.sqrt(dxa * dxa + dya * dya)
                    lb = math.sqrt(dxb * dxb + dyb * dyb)
                    z1 = _lut_distance(luts, abs(la - lb), d1_scale)
                    if z1 > 1e-6 and la > 0.0 and lb > 0.0:
                        inv_l = 1.0 / (la * lb)
                        pc = (dxa * dxb + dya * dyb) * inv_l
                        ps = (dya * dxb - dxa * dyb) * inv_l
                        z12 = z1 * z2
                        v = z12 * _lut_cos(luts, 2, dcr * pc + dsr * ps)
                        v2 = z12 * _lut_cos(luts, 2, dcos[k] * pc + dsin[k] * ps)
            if v != 0.0:
                rho[r, rho_n[r]] = v
                rho_k[r, rho_n[r]] = k
                rho_n[r] += 1
            if v2 != 0.0:
                rho[k, rho_n[k]] = v2
                rho_k[k, rho_n[k]] = r
                rho_n[k] += 1
    for r in range(n_r):
        lam[r] = cand_sim[sel[r]]
    inv = (1.0 - w_r) / (n_r - 1)
    for _ in range(n_rel):
        for r in range(n_r):
            # the sum over all k in increasing k: the zero terms left out add exactly nothing
            acc = 0.0
            for p in range(rho_n[r]):
                acc += rho[r, p] * lam[rho_k[r, p]]
            lam_new[r] = w_r * lam[r] + inv * acc
        for r in range(n_r):
            lam[r] = lam_new[r]
    # efficiency lambda_final / lambda_initial; take the n_p most efficient
    for r in range(n_r):
        lam_new[r] = lam[r] / cand_sim[sel[r]]
    take = min(n_p, n_r)
    total = 0.0
    for t in range(take):
        best = -1.0
        bi = -1
        for r in range(n_r):
            v = lam_new[r]
            better = v > best  # branch-free argmax (the first of equals)
            bi = r if better else bi
            best = v if better else best
        lam_new[bi] = -2.0
        total += lam[bi]
        out_pairs[t, 0] = cand_i[sel[bi]]
        out_pairs[t, 1] = cand_j[sel[bi]]
    return total / n_p, take, n_r


@njit(cache=True, nogil=True, error_model="numpy")
def _fuse(s_local, g, gparams):
    """Final score from the LSS-R score and the global overlap score: s^alpha * g^beta."""
    if s_local <= 0.0 or g <= 0.0:
        return 0.0
    return s_local ** gparams[7] * g ** gparams[8]


@njit(cache=True, nogil=True, error_model="numpy")
def score_one(
    a_bits, a_mask, a_maskx, a_geo, a_theta, a_hull_rank, a_w, b_bits, b_mask, b_maskx, b_geo, b_theta, b_hull_rank, b_w,
    plane_words, min_common_cells, params, luts, gparams, out_pairs, out_agreed,
):
    """Score of one template pair (rows of valid cylinders); returns (score, LSS-R score, pairs written).

    ``out_agreed`` (nb,) int32 receives, for each row of b, the row of a it agrees with under the
    global stage's final alignment (the m pairs G counts), or -1."""
    na = a_bits.shape[0]
    nb = b_bits.shape[0]
    cap = max(na * nb, 1)
    cand_sim = np.empty(cap)
    cand_i = np.empty(cap, dtype=np.int32)
    cand_j = np.empty(cap, dtype=np.int32)
    n_max = max(min(na, nb), 1)
    row_start = np.empty(na + 1, dtype=np.int32)
    row_best = np.empty(max(na, 1), dtype=np.int32)
    sel = np.empty(cap, dtype=np.int32)
    order = np.empty(cap, dtype=np.int32)
    taken = np.empty(cap, dtype=np.bool_)
    row_sim = np.empty(max(na, 1))
    row_col = np.empty(max(na, 1), dtype=np.int32)
    used_b = np.zeros(nb, dtype=np.bool_)
    best_a = np.empty(max(na, 1), dtype=np.int32)
    dist_a = np.empty(max(na, 1))
    best_b = np.empty(max(nb, 1), dtype=np.int32)
    dist_b = np.empty(max(nb, 1))
    rho = np.empty((n_max, n_max))
    rho_k = np.empty((n_max, n_max), dtype=np.int32)
    rho_n = np.empty(n_max, dtype=np.int32)
    lam = np.empty(n_max)
    lam_new = np.empty(n_max)
    dcos = np.empty(n_max)
    dsin = np.empty(n_max)
    cg = np.empty((n_max, 8))
    qb = np.empty((max(nb, 1), 4))
    a_hull = np.empty((max(na, 1), 2))
    hull_buf = np.empty((max(nb, 1), 2))
    a_h = gather_hull(a_geo, a_hull_rank, a_hull)
    dir_gate = _lut_gate(luts, 1)
    agrid = np.empty(3)
    a_order, a_start = x_grid(a_geo, gparams[2], agrid)  # the probe's minutiae by x, for the global stage
    n_cand = local_similarities_rooted(
        a_bits, a_mask, a_maskx, a_geo, b_bits, b_mask, b_maskx, b_geo, plane_words, min_common_cells,
        cand_sim, cand_i, cand_j, row_start, row_best, sqrt_table(a_bits.shape[1]),
    )
    s_local, k, n_r = lssr_score(
        a_geo, a_theta, b_geo, b_theta, n_cand, cand_sim, cand_i, cand_j, na, nb, params, luts, row_start, row_best, sel, used_b, taken, row_sim, row_col, rho, rho_k, rho_n, lam, lam_new, dcos, dsin, cg, dir_gate, out_pairs
    )
    out_agreed[:] = -1
    if s_local <= 0.0:
        return 0.0, 0.0, k
    best_a[:] = -1  # the global stage may stop before counting: then nothing agrees
    best_b[:] = -1
    g = global_overlap_score(
        a_geo, a_w, a_hull, a_h, a_order, a_start, agrid, b_geo, b_w, b_hull_rank, cand_i, cand_j, sel, n_r, gparams,
        best_a, best_b, dist_a, dist_b, qb, hull_buf, order, cg, dcos, dsin,
    )
    if g > 0.0:  # best_a / best_b hold the mutual nearest neighbours of the last count (the final alignment)
        for j in range(nb):
            i = best_b[j]
            if i >= 0 and best_a[i] == j:
                out_agreed[j] = i
    return _fuse(s_local, g, gparams), s_local, k


@njit(cache=True, nogil=True, error_model="numpy")
def score_batch(
    a_bits,
    a_mask,
    a_maskx,
    a_geo,
    a_theta,
    a_hull_rank,
    a_w,
    bits,
    mask,
    maskx,
    geo,
    theta,
    hull_rank,
    w,
    offsets,
    subset,
    plane_words,
    min_common_cells,
    params,
    luts,
    gparams,
    out,
):
    """Score the probe (a_*) against templates ``subset`` of a packed set; writes out[t] for each."""
    na = a_bits.shape[0]
    n_max_b = 1
    for t in range(subset.shape[0]):
        s = subset[t]
        n_max_b = max(n_max_b, offsets[s + 1] - offsets[s])
    cap = max(na * n_max_b, 1)
    cand_sim = np.empty(cap)
    cand_i = np.empty(cap, dtype=np.int32)
    cand_j = np.empty(cap, dtype=np.int32)
    n_max = max(min(na, n_max_b), 1)
    row_start = np.empty(na + 1, dtype=np.int32)
    row_best = np.empty(max(na, 1), dtype=np.int32)
    sel = np.empty(cap, dtype=np.int32)
    order = np.empty(cap, dtype=np.int32)
    taken = np.empty(cap, dtype=np.bool_)
    row_sim = np.empty(max(na, 1))
    row_col = np.empty(max(na, 1), dtype=np.int32)
    used_b = np.zeros(n_max_b, dtype=np.bool_)
    best_a = np.empty(max(na, 1), dtype=np.int32)
    dist_a = np.empty(max(na, 1))
    best_b = np.empty(n_max_b, dtype=np.int32)
    dist_b = np.empty(n_max_b)
    rho = np.empty((n_max, n_max))
    rho_k = np.empty((n_max, n_max), dtype=np.int32)
    rho_n = np.empty(n_max, dtype=np.int32)
    lam = np.empty(n_max)
    lam_new = np.empty(n_max)
    dcos = np.empty(n_max)
    dsin = np.empty(n_max)
    pairs = np.empty((int(params[4]) + 1, 2), dtype=np.int32)
    cg = np.empty((n_max, 8))
    qb = np.empty((n_max_b, 4))
    a_hull = np.empty((max(na, 1), 2))
    hull_buf = np.empty((n_max_b, 2))
    a_h = gather_hull(a_geo, a_hull_rank, a_hull)
    dir_gate = _lut_gate(luts, 1)
    agrid = np.empty(3)
    a_order, a_start = x_grid(a_geo, gparams[2], agrid)  # the probe's minutiae by x, for the global stage
    root = sqrt_table(a_bits.shape[1])
    for t in range(subset.shape[0]):
        s = subset[t]
        lo = offsets[s]
        hi = offsets[s + 1]
        nb = hi - lo
        if na < 2 or nb < 2:
            out[t] = 0.0
            continue
        n_cand = local_similarities_rooted(
            a_bits, a_mask, a_maskx, a_geo, bits[lo:hi], mask[lo:hi], maskx[lo:hi], geo[lo:hi], plane_words,
            min_common_cells, cand_sim, cand_i, cand_j, row_start, row_best, root,
        )
        sc, k, n_r = lssr_score(
            a_geo, a_theta, geo[lo:hi], theta[lo:hi], n_cand, cand_sim, cand_i, cand_j, na, nb, params, luts, row_start, row_best, sel, used_b, taken, row_sim, row_col, rho,
            rho_k, rho_n, lam, lam_new, dcos, dsin, cg, dir_gate, pairs,
        )
        if sc <= 0.0:
            out[t] = 0.0
            continue
        g = global_overlap_score(
            a_geo, a_w, a_hull, a_h, a_order, a_start, agrid, geo[lo:hi], w[lo:hi], hull_rank[lo:hi], cand_i, cand_j, sel,
            n_r, gparams, best_a, best_b, dist_a, dist_b, qb, hull_buf, order, cg, dcos, dsin,
        )
        out[t] = _fuse(sc, g, gparams)
