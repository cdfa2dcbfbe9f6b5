"""Numba kernels of :mod:`biomatch.scoring`: MCC local similarities and LSS-R.

Private: arrays and scalars in, nothing validated. Only ``biomatch.scoring``
calls them. Every kernel is ``nogil`` so threads scale over cores.

Layout of a packed template set (only valid cylinders are packed):

- ``bits``  uint64 (N, n_dir * plane_words) cylinder bits,
- ``mask``  uint64 (N, plane_words) valid cells,
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


@intrinsic
def _popcount(typingctx, x):
    """Hardware population count of a uint64 (llvm.ctpop); numba has no builtin for it."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, nogil=True)
def popcount_rows(a):
    """Number of set bits of each row of a uint64 (n, w) array -> int64 (n,)."""
    out = np.zeros(a.shape[0], dtype=np.int64)
    for i in range(a.shape[0]):
        c = 0
        for w in range(a.shape[1]):
            c += _popcount(a[i, w])
        out[i] = c
    return out


@njit(cache=True, nogil=True)
def _wrap_pi(a):
    two_pi = 2.0 * math.pi
    a = (a + math.pi) % two_pi
    if a < 0.0:
        a += two_pi
    return a - math.pi


@njit(cache=True, nogil=True)
def local_similarities(
    a_bits, a_mask, a_geo, b_bits, b_mask, b_geo, n_dir, plane_words, min_common_cells, out_sim, out_i, out_j
):
    """MCC bit-based local similarity of every matchable cylinder pair.

    A pair is matchable when the directions differ by at most pi/2 and the
    cylinders share at least ``min_common_cells`` valid cells. Similarity is
    1 - sqrt(|a^b|) / (sqrt(|a|) + sqrt(|b|)), every count taken over the
    common valid cells. Writes the pairs with similarity > 0 into ``out_*``
    (capacity na * nb) and returns their number.
    """
    na = a_bits.shape[0]
    nb = b_bits.shape[0]
    count = 0
    for i in range(na):
        ca = a_geo[i, 2]
        sa = a_geo[i, 3]
        for j in range(nb):
            if ca * b_geo[j, 2] + sa * b_geo[j, 3] < 0.0:  # |d theta| > pi/2
                continue
            common = 0
            for w in range(plane_words):
                common += _popcount(a_mask[i, w] & b_mask[j, w])
            if common < min_common_cells:
                continue
            x = 0
            pa = 0
            pb = 0
            for k in range(n_dir):
                base = k * plane_words
                for w in range(plane_words):
                    av = a_bits[i, base + w]
                    bv = b_bits[j, base + w]
                    ma = a_mask[i, w]
                    mb = b_mask[j, w]
                    x += _popcount((av ^ bv) & ma & mb)
                    pa += _popcount(av & mb)
                    pb += _popcount(bv & ma)
            den = math.sqrt(pa) + math.sqrt(pb)
            if den <= 0.0:
                continue
            s = 1.0 - math.sqrt(x) / den
            if s <= 0.0:
                continue
            out_sim[count] = s
            out_i[count] = i
            out_j[count] = j
            count += 1
    return count


@njit(cache=True, nogil=True)
def _sigmoid(v, mu, tau):
    return 1.0 / (1.0 + math.exp(-tau * (v - mu)))


@njit(cache=True, nogil=True)
def _select_pairs(sim, cand_i, cand_j, n, k, one_to_one, hist, order, sel, used_a, used_b):
    """Up to k candidate pairs by decreasing similarity into sel; returns how many.

    Counting sort on similarity quantised to ``hist.shape[0]`` levels, then an
    insertion sort on the exact values (ties keep candidate order). With ``one_to_one`` a pair is skipped when one of
    its minutiae is already taken (greedy assignment)."""
    nbins = hist.shape[0]
    for b in range(nbins):
        hist[b] = 0
    for t in range(n):
        hist[nbins - 1 - int(sim[t] * (nbins - 1))] += 1
    acc = 0
    for b in range(nbins):
        c = hist[b]
        hist[b] = acc
        acc += c
    for t in range(n):
        b = nbins - 1 - int(sim[t] * (nbins - 1))
        order[hist[b]] = t
        hist[b] += 1
    # insertion sort finishes the (nearly sorted) order on exact values
    for q in range(1, n):
        t = order[q]
        v = sim[t]
        r = q - 1
        while r >= 0 and sim[order[r]] < v:
            order[r + 1] = order[r]
            r -= 1
        order[r + 1] = t
    m = 0
    if one_to_one:
        for t in range(n):
            used_a[cand_i[t]] = False
            used_b[cand_j[t]] = False
    for q in range(n):
        if m >= k:
            break
        t = order[q]
        if one_to_one:
            if used_a[cand_i[t]] or used_b[cand_j[t]]:
                continue
            used_a[cand_i[t]] = True
            used_b[cand_j[t]] = True
        sel[m] = t
        m += 1
    return m


@njit(cache=True, nogil=True)
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
    hist,
    order,
    sel,
    used_a,
    used_b,
    rho,
    lam,
    lam_new,
    out_pairs,
):
    """LSS-R consolidation: relaxation over the top min(na, nb) pairs, score over the nP most efficient.

    ``params``: float64 [n_rel, w_r, mu1, tau1, mu2, tau2, mu3, tau3, min_np, max_np, mu_p, tau_p,
    one_to_one].
    Writes the nP selected pairs (row indices into a and b) to out_pairs and
    returns (score, number of pairs written).
    """
    n_rel = int(params[0])
    w_r = params[1]
    mu1 = params[2]
    tau1 = params[3]
    mu2 = params[4]
    tau2 = params[5]
    mu3 = params[6]
    tau3 = params[7]
    min_np = params[8]
    max_np = params[9]
    n_min = min(na, nb)
    # compatibilities are normalised so that a perfectly consistent pair gives 1
    rho_norm = 1.0 / (_sigmoid(0.0, mu1, tau1) * _sigmoid(0.0, mu2, tau2) * _sigmoid(0.0, mu3, tau3))
    n_p = int(min_np + round(_sigmoid(n_min, params[10], params[11]) * (max_np - min_np)))
    n_r = _select_pairs(cand_sim, cand_i, cand_j, n_cand, n_min, params[12] > 0.0, hist, order, sel, used_a, used_b)
    if n_r < 2 or n_p < 1:
        return 0.0, 0
    # pair compatibility rho(r, k) (zero diagonal; the radial-angle term is seen from r)
    for r in range(n_r):
        rho[r, r] = 0.0
        ir_ = cand_i[sel[r]]
        jr = cand_j[sel[r]]
        for k in range(r + 1, n_r):
            ik = cand_i[sel[k]]
            jk = cand_j[sel[k]]
            v = 0.0
            v2 = 0.0
            if ik != ir_ and jk != jr:
                dxa = a_geo[ir_, 0] - a_geo[ik, 0]
                dya = a_geo[ir_, 1] - a_geo[ik, 1]
                dxb = b_geo[jr, 0] - b_geo[jk, 0]
                dyb = b_geo[jr, 1] - b_geo[jk, 1]
                d1 = abs(math.sqrt(dxa * dxa + dya * dya) - math.sqrt(dxb * dxb + dyb * dyb))
                z1 = _sigmoid(d1, mu1, tau1)
                if z1 > 1e-6:
                    d2 = abs(
                        _wrap_pi(_wrap_pi(a_theta[ir_] - a_theta[ik]) - _wrap_pi(b_theta[jr] - b_theta[jk]))
                    )
                    z2 = _sigmoid(d2, mu2, tau2)
                    if z2 > 1e-6:
                        # radial angle of the other minutia seen from each end
                        # (the segment's direction from k to r, and from r to k)
                        pa = math.atan2(dya, dxa)
                        pb = math.atan2(dyb, dxb)
                        d3 = abs(_wrap_pi((a_theta[ir_] - pa) - (b_theta[jr] - pb)))
                        d3k = abs(_wrap_pi((a_theta[ik] - pa) - (b_theta[jk] - pb)))
                        v = z1 * z2 * _sigmoid(d3, mu3, tau3) * rho_norm
                        v2 = z1 * z2 * _sigmoid(d3k, mu3, tau3) * rho_norm
            rho[r, k] = v
            rho[k, r] = v2
    for r in range(n_r):
        lam[r] = cand_sim[sel[r]]
    inv = (1.0 - w_r) / (n_r - 1)
    for _ in range(n_rel):
        for r in range(n_r):
            acc = 0.0
            for k in range(n_r):
                acc += rho[r, k] * lam[k]
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
            if lam_new[r] > best:
                best = lam_new[r]
                bi = r
        lam_new[bi] = -2.0
        total += lam[bi]
        out_pairs[t, 0] = cand_i[sel[bi]]
        out_pairs[t, 1] = cand_j[sel[bi]]
    score = total / n_p
    if params[13] > 0.0 and take >= 2:
        g = _alignment_score(a_geo, a_theta, b_geo, b_theta, out_pairs, take, lam, params, used_a, used_b)
        w = params[13]
        score = (1.0 - w) * score + w * g
    return score, take


@njit(cache=True, nogil=True)
def _alignment_score(a_geo, a_theta, b_geo, b_theta, pairs, n_pairs, lam, params, used_a, used_b):
    """Global consistency: align b onto a by the rigid transform of the selected
    pairs, pair minutiae within tolerance and score m^2 / (overlap_a * overlap_b),
    overlap counting the minutiae near the other template's minutiae."""
    na = a_geo.shape[0]
    nb = b_geo.shape[0]
    sc = 0.0
    ss = 0.0
    for t in range(n_pairs):
        d = a_theta[pairs[t, 0]] - b_theta[pairs[t, 1]]
        sc += math.cos(d)
        ss += math.sin(d)
    rot = math.atan2(ss, sc)
    c = math.cos(rot)
    s = math.sin(rot)
    ax = 0.0
    ay = 0.0
    bx = 0.0
    by = 0.0
    for t in range(n_pairs):
        ax += a_geo[pairs[t, 0], 0]
        ay += a_geo[pairs[t, 0], 1]
        bx += b_geo[pairs[t, 1], 0]
        by += b_geo[pairs[t, 1], 1]
    ax /= n_pairs
    ay /= n_pairs
    bx /= n_pairs
    by /= n_pairs
    tol_d = params[14]
    tol_d2 = tol_d * tol_d
    tol_a = params[15]
    ov_r2 = params[16] * params[16]
    for i in range(na):
        used_a[i] = False
    n_match = 0
    n_ov_b = 0
    for j in range(nb):
        x = b_geo[j, 0] - bx
        y = b_geo[j, 1] - by
        xt = ax + c * x - s * y
        yt = ay + s * x + c * y
        tt = b_theta[j] + rot
        best = tol_d2
        bi = -1
        near = False
        for i in range(na):
            dx = a_geo[i, 0] - xt
            dy = a_geo[i, 1] - yt
            d2 = dx * dx + dy * dy
            if d2 <= ov_r2:
                near = True
                if d2 <= best and not used_a[i] and abs(_wrap_pi(a_theta[i] - tt)) <= tol_a:
                    best = d2
                    bi = i
        if near:
            n_ov_b += 1
        if bi >= 0:
            used_a[bi] = True
            n_match += 1
    n_ov_a = 0
    for i in range(na):
        near = False
        for j in range(nb):
            x = b_geo[j, 0] - bx
            y = b_geo[j, 1] - by
            dx = a_geo[i, 0] - (ax + c * x - s * y)
            dy = a_geo[i, 1] - (ay + s * x + c * y)
            if dx * dx + dy * dy <= ov_r2:
                near = True
                break
        if near:
            n_ov_a += 1
    floor = params[17]
    return n_match * n_match / (max(n_ov_a, floor) * max(n_ov_b, floor))


@njit(cache=True, nogil=True)
def score_one(
    a_bits, a_mask, a_geo, a_theta, b_bits, b_mask, b_geo, b_theta, n_dir, plane_words, min_common_cells, params, out_pairs
):
    """Score of one template pair (rows of valid cylinders); returns (score, pairs written)."""
    na = a_bits.shape[0]
    nb = b_bits.shape[0]
    cap = max(na * nb, 1)
    cand_sim = np.empty(cap)
    cand_i = np.empty(cap, dtype=np.int32)
    cand_j = np.empty(cap, dtype=np.int32)
    n_max = max(min(na, nb), 1)
    hist = np.empty(1024, dtype=np.int32)
    sel = np.empty(cap, dtype=np.int32)
    order = np.empty(cap, dtype=np.int32)
    used_a = np.zeros(na, dtype=np.bool_)
    used_b = np.zeros(nb, dtype=np.bool_)
    rho = np.empty((n_max, n_max))
    lam = np.empty(n_max)
    lam_new = np.empty(n_max)
    n_cand = local_similarities(
        a_bits, a_mask, a_geo, b_bits, b_mask, b_geo, n_dir, plane_words, min_common_cells, cand_sim, cand_i, cand_j
    )
    return lssr_score(
        a_geo, a_theta, b_geo, b_theta, n_cand, cand_sim, cand_i, cand_j, na, nb, params, hist, order, sel, used_a, used_b, rho, lam, lam_new, out_pairs
    )


@njit(cache=True, nogil=True)
def score_batch(
    a_bits,
    a_mask,
    a_geo,
    a_theta,
    bits,
    mask,
    geo,
    theta,
    offsets,
    subset,
    n_dir,
    plane_words,
    min_common_cells,
    params,
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
    hist = np.empty(1024, dtype=np.int32)
    sel = np.empty(cap, dtype=np.int32)
    order = np.empty(cap, dtype=np.int32)
    used_a = np.zeros(na, dtype=np.bool_)
    used_b = np.zeros(n_max_b, dtype=np.bool_)
    rho = np.empty((n_max, n_max))
    lam = np.empty(n_max)
    lam_new = np.empty(n_max)
    pairs = np.empty((int(params[9]) + 1, 2), dtype=np.int32)
    for t in range(subset.shape[0]):
        s = subset[t]
        lo = offsets[s]
        hi = offsets[s + 1]
        nb = hi - lo
        if na < 2 or nb < 2:
            out[t] = 0.0
            continue
        n_cand = local_similarities(
            a_bits, a_mask, a_geo, bits[lo:hi], mask[lo:hi], geo[lo:hi], n_dir, plane_words, min_common_cells,
            cand_sim, cand_i, cand_j,
        )
        sc, _ = lssr_score(
            a_geo, a_theta, geo[lo:hi], theta[lo:hi], n_cand, cand_sim, cand_i, cand_j, na, nb, params, hist, order, sel, used_a, used_b, rho,
            lam, lam_new, pairs,
        )
        out[t] = sc
