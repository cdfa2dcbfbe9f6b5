// biomatch._native: C++ kernels for the branchy per-pixel and skeleton loops
// of extraction. Called only by biomatch.extraction, which validates inputs
// (dtypes, C-contiguity, shapes); the kernels here check nothing.
//
// Kernels
//   oriented_filter   separable oriented Gabor: band-pass across the ridge,
//                     Gaussian along it, per-pixel orientation and period.
//   thin              Guo-Hall two-subiteration thinning followed by removal
//                     of redundant staircase pixels (8-connected, 1 px wide).
//   crossing_numbers  crossing number of every skeleton pixel.
//   detect_minutiae   skeleton pixels with crossing number 1 (ending) or 3
//                     (bifurcation).
//   trace_branches    walk each branch leaving a minutia along the skeleton,
//                     recording a direction point and what ends the walk.
//   label4            4-connected components of a binary image, numbered in
//                     raster order of their first pixel (scipy.ndimage.label's
//                     numbering with its default structure).
//   fill_holes        background regions not 4-connected to the image edge,
//                     filled (scipy.ndimage.binary_fill_holes' default).
//   distance_to_zero  exact Euclidean distance of every pixel to the nearest
//                     zero pixel (scipy.ndimage.distance_transform_edt).
//   correlate_axis,   1-D correlation and box mean along one axis of an image,
//   box_axis          in double precision (the separable Gaussian and box filters).
// The last three replace scipy.ndimage in extraction: importing scipy.ndimage
// costs about 0.2 s, two thirds of the cold-start budget of a one-shot
// `biomatch extract`; biomatch/_filters.py builds the kernels and calls these.
// They are hand-written because no library offers per-pixel-orientation
// filtering or skeleton tracing, and skeletonize-style loops in Python are slow.
//
// C++ or numba: numba ports of two kernels were timed on FVC2002 images (same
// run, paired, medians): thinning C++ 1.3 ms vs numba 1.9 ms (numba without the
// staircase pass); the oriented filter with bilinear sampling in both passes
// was about 8% slower in C++ than in numba (fastmath, host-CPU code). The filter
// stays here, multi-versioned for AVX2/AVX-512 and now sampling the along-ridge
// pass at the nearest pixel (8.9 ms vs 11.5 ms for the bilinear numba port;
// same agreement with vendor templates), because numba would also cost a
// one-shot `biomatch extract` its import and cache load (about half a second)
// and one implementation per kernel keeps one toolchain for extraction.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace py = pybind11;
using u8arr = py::array_t<uint8_t, py::array::c_style>;
using f32arr = py::array_t<float, py::array::c_style>;
using i32arr = py::array_t<int32_t, py::array::c_style>;
using f64arr = py::array_t<double, py::array::c_style>;

namespace {

// Neighbour ring, counter-clockwise starting east, image rows pointing down:
// E, NE, N, NW, W, SW, S, SE.
constexpr int DY[8] = {0, -1, -1, -1, 0, 1, 1, 1};
constexpr int DX[8] = {1, 1, 0, -1, -1, -1, 0, 1};

inline int ring_code(const uint8_t* img, int w, int y, int x) {
    const uint8_t* p = img + static_cast<ptrdiff_t>(y) * w + x;
    int code = 0;
    for (int k = 0; k < 8; ++k) {
        if (p[DY[k] * w + DX[k]]) code |= 1 << k;
    }
    return code;
}

inline int crossing_number_of(int code) {
    int t = 0;
    for (int k = 0; k < 8; ++k) {
        int a = (code >> k) & 1, b = (code >> ((k + 1) & 7)) & 1;
        t += a != b;
    }
    return t / 2;
}

// Number of 8-connected components formed by the set neighbours.
int neighbour_components(int code) {
    int parent[8];
    for (int k = 0; k < 8; ++k) parent[k] = k;
    auto find = [&](int a) {
        while (parent[a] != a) a = parent[a] = parent[parent[a]];
        return a;
    };
    for (int a = 0; a < 8; ++a) {
        if (!((code >> a) & 1)) continue;
        for (int b = a + 1; b < 8; ++b) {
            if (!((code >> b) & 1)) continue;
            int dy = DY[a] - DY[b], dx = DX[a] - DX[b];
            if (std::abs(dy) <= 1 && std::abs(dx) <= 1) parent[find(a)] = find(b);
        }
    }
    int n = 0;
    for (int k = 0; k < 8; ++k)
        if (((code >> k) & 1) && find(k) == k) ++n;
    return n;
}

struct Tables {
    uint8_t guo_hall[2][256];  // 1 = delete in sub-iteration 0 / 1
    uint8_t staircase[256];    // 1 = redundant pixel of an 8-connected curve
    uint8_t crossing[256];
    Tables() {
        for (int c = 0; c < 256; ++c) {
            // x1..x8 in Guo & Hall's notation = E, NE, N, NW, W, SW, S, SE.
            int x[10];
            for (int k = 0; k < 8; ++k) x[k + 1] = (c >> k) & 1;
            x[9] = x[1];
            int xh = 0;  // Hilditch crossing number
            for (int i = 1; i <= 4; ++i) xh += (!x[2 * i - 1]) && (x[2 * i] || x[2 * i + 1]);
            int n1 = 0, n2 = 0;
            for (int k = 1; k <= 4; ++k) {
                n1 += x[2 * k - 1] || x[2 * k];
                n2 += x[2 * k] || x[(2 * k + 1 > 8) ? 1 : 2 * k + 1];
            }
            int nmin = n1 < n2 ? n1 : n2;
            bool g12 = xh == 1 && nmin >= 2 && nmin <= 3;
            bool g3 = ((x[2] || x[3] || !x[8]) && x[1]) == 0;
            bool g3b = ((x[6] || x[7] || !x[4]) && x[5]) == 0;
            guo_hall[0][c] = g12 && g3;
            guo_hall[1][c] = g12 && g3b;
            int count = __builtin_popcount(c);
            bool four_bg = !x[1] || !x[3] || !x[5] || !x[7];
            staircase[c] = count >= 2 && four_bg && neighbour_components(c) == 1;
            crossing[c] = static_cast<uint8_t>(crossing_number_of(c));
        }
    }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

inline float bilinear(const float* __restrict img, int h, int w, float y, float x) {
    // branchless clamp to the image (the last row/column is reached with weight ~1)
    y = std::min(std::max(y, 0.f), h - 1.001f);
    x = std::min(std::max(x, 0.f), w - 1.001f);
    const int y0 = static_cast<int>(y), x0 = static_cast<int>(x);
    const float fy = y - y0, fx = x - x0;
    const float* p = img + static_cast<ptrdiff_t>(y0) * w + x0;
    const float top = p[0] + fx * (p[1] - p[0]);
    const float bottom = p[w] + fx * (p[w + 1] - p[w]);
    return top + fy * (bottom - top);
}

}  // namespace

// The two sampling passes of oriented_filter. Compiled for AVX-512 and AVX2+FMA as well as
// the baseline (GCC function multi-versioning on Linux picks one at load time),
// so a portable build still uses the wide units of the machine it runs on.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define BIOMATCH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BIOMATCH_CLONES
#endif
BIOMATCH_CLONES
static void oriented_filter_loops(const float* img, const uint8_t* m, const float* th, const float* per, int h, int w,
                                  const float* table, const int* radius, int nq, int rmax, float pmin, float period_step,
                                  const float* g_along, int r_along, float* across, float* o) {
    const int stride = 2 * rmax + 1;
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const ptrdiff_t i = static_cast<ptrdiff_t>(y) * w + x;
            if (!m[i]) continue;
            int q = static_cast<int>((per[i] - pmin) / period_step + 0.5f);
            q = q < 0 ? 0 : (q >= nq ? nq - 1 : q);
            const float* wts = table + static_cast<ptrdiff_t>(q) * stride + rmax;
            const int r = radius[q];
            const float ny = std::cos(th[i]), nx = -std::sin(th[i]);  // unit normal to the ridge
            float acc = 0;
            for (int t = -r; t <= r; ++t) acc += wts[t] * bilinear(img, h, w, y + t * ny, x + t * nx);
            across[i] = acc;
        }
    }
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const ptrdiff_t i = static_cast<ptrdiff_t>(y) * w + x;
            if (!m[i]) {
                o[i] = 0.f;
                continue;
            }
            const float uy = std::sin(th[i]), ux = std::cos(th[i]);
            float acc = 0;
            // along the ridge the signal is smooth: nearest-pixel samples suffice
            for (int t = -r_along; t <= r_along; ++t) {
                int yy = static_cast<int>(std::lround(y + t * uy)), xx = static_cast<int>(std::lround(x + t * ux));
                yy = std::min(std::max(yy, 0), h - 1);
                xx = std::min(std::max(xx, 0), w - 1);
                acc += g_along[t + r_along] * across[static_cast<ptrdiff_t>(yy) * w + xx];
            }
            o[i] = acc;
        }
    }
}

// Oriented Gabor filter in its separable local form: at each masked pixel a
// 1-D Gabor across the ridge (period from `period`, Gaussian envelope
// sigma_across = across_sigma_periods * period, zero-mean weights), then a
// 1-D Gaussian along the ridge (sigma_along_px, nearest-pixel samples). `orientation` is the ridge
// direction in image coordinates (x right, y down), radians.
f32arr oriented_filter(const f32arr& image, const u8arr& mask, const f32arr& orientation, const f32arr& period,
                       double across_sigma_periods, double sigma_along_px) {
    const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
    const float* img = image.data();
    const uint8_t* m = mask.data();
    const float* th = orientation.data();
    const float* per = period.data();
    std::vector<float> across(static_cast<size_t>(h) * w, 0.f);
    f32arr out({h, w});
    float* o = out.mutable_data();
    const int r_along = static_cast<int>(std::ceil(2.5 * sigma_along_px));
    std::vector<float> g_along(2 * r_along + 1);
    {
        double s = 0;
        for (int t = -r_along; t <= r_along; ++t) s += g_along[t + r_along] = std::exp(-0.5 * t * t / (sigma_along_px * sigma_along_px));
        for (auto& v : g_along) v = static_cast<float>(v / s);
    }
    // Across-ridge weights tabulated per period in steps of PERIOD_STEP px.
    constexpr float PERIOD_STEP = 0.1f;
    float pmin = 1e9f, pmax = 0.f;
    for (ptrdiff_t i = 0; i < static_cast<ptrdiff_t>(h) * w; ++i)
        if (m[i]) { pmin = std::min(pmin, per[i]); pmax = std::max(pmax, per[i]); }
    if (pmax < pmin) pmin = pmax = 8.f;
    const int nq = static_cast<int>((pmax - pmin) / PERIOD_STEP) + 1;
    std::vector<std::vector<float>> table(nq);
    for (int q = 0; q < nq; ++q) {
        const float p = pmin + q * PERIOD_STEP;
        const float sig = static_cast<float>(across_sigma_periods) * p;
        const int r = static_cast<int>(std::ceil(2.5f * sig));
        auto& wts = table[q];
        wts.resize(2 * r + 1);
        float wsum = 0, wabs = 0;
        for (int t = -r; t <= r; ++t) wsum += wts[t + r] = std::exp(-0.5f * t * t / (sig * sig)) * std::cos(6.2831853f * t / p);
        for (auto& v : wts) v -= wsum / (2 * r + 1);
        for (auto v : wts) wabs += std::fabs(v);
        for (auto& v : wts) v /= (wabs > 0 ? wabs : 1.f);
    }
    // flat table: row q holds 2 * rmax + 1 weights centred on rmax (zeros beyond its radius)
    int rmax = 0;
    for (const auto& t : table) rmax = std::max(rmax, static_cast<int>(t.size() / 2));
    std::vector<float> flat(static_cast<size_t>(nq) * (2 * rmax + 1), 0.f);
    std::vector<int> radius(nq);
    for (int q = 0; q < nq; ++q) {
        const int r = static_cast<int>(table[q].size() / 2);
        radius[q] = r;
        std::copy(table[q].begin(), table[q].end(), flat.begin() + static_cast<ptrdiff_t>(q) * (2 * rmax + 1) + rmax - r);
    }
    {
        py::gil_scoped_release release;
        oriented_filter_loops(img, m, th, per, h, w, flat.data(), radius.data(), nq, rmax, pmin, PERIOD_STEP, g_along.data(),
                              r_along, across.data(), o);
    }
    return out;
}

// Guo-Hall thinning of a 0/1 image, then removal of staircase pixels so the
// result is an 8-connected curve one pixel wide. The one-pixel frame is cleared.
u8arr thin(const u8arr& binary) {
    const int h = static_cast<int>(binary.shape(0)), w = static_cast<int>(binary.shape(1));
    u8arr out({h, w});
    uint8_t* s = out.mutable_data();
    const uint8_t* b = binary.data();
    const Tables& T = tables();
    {
        py::gil_scoped_release release;
        for (ptrdiff_t i = 0; i < static_cast<ptrdiff_t>(h) * w; ++i) s[i] = b[i] ? 1 : 0;
        for (int x = 0; x < w; ++x) s[x] = s[static_cast<ptrdiff_t>(h - 1) * w + x] = 0;
        for (int y = 0; y < h; ++y) s[static_cast<ptrdiff_t>(y) * w] = s[static_cast<ptrdiff_t>(y) * w + w - 1] = 0;
        std::vector<ptrdiff_t> candidates, del;
        for (int y = 1; y < h - 1; ++y)
            for (int x = 1; x < w - 1; ++x)
                if (s[static_cast<ptrdiff_t>(y) * w + x]) candidates.push_back(static_cast<ptrdiff_t>(y) * w + x);
        bool changed = true;
        while (changed) {
            changed = false;
            for (int pass = 0; pass < 2; ++pass) {
                del.clear();
                for (ptrdiff_t i : candidates) {
                    if (!s[i]) continue;
                    int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
                    if (T.guo_hall[pass][ring_code(s, w, y, x)]) del.push_back(i);
                }
                for (ptrdiff_t i : del) s[i] = 0;
                if (!del.empty()) changed = true;
            }
            // keep only pixels still set as candidates
            size_t k = 0;
            for (ptrdiff_t i : candidates)
                if (s[i]) candidates[k++] = i;
            candidates.resize(k);
        }
        // Sequential clean-up: delete simple non-end pixels that have a background
        // 4-neighbour (corners of staircases), keeping 8-connectivity.
        for (ptrdiff_t i : candidates) {
            if (!s[i]) continue;
            int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
            if (T.staircase[ring_code(s, w, y, x)]) {
                // only a corner: two 4-neighbours set that are 8-adjacent to each other
                int c = ring_code(s, w, y, x);
                bool e = c & 1, n = c & 4, wv = c & 16, so = c & 64;
                if ((e && n) || (n && wv) || (wv && so) || (so && e)) s[i] = 0;
            }
        }
    }
    return out;
}

u8arr crossing_numbers(const u8arr& skeleton) {
    const int h = static_cast<int>(skeleton.shape(0)), w = static_cast<int>(skeleton.shape(1));
    const uint8_t* s = skeleton.data();
    u8arr out({h, w});
    uint8_t* o = out.mutable_data();
    const Tables& T = tables();
    for (ptrdiff_t i = 0; i < static_cast<ptrdiff_t>(h) * w; ++i) o[i] = 0;
    for (int y = 1; y < h - 1; ++y)
        for (int x = 1; x < w - 1; ++x) {
            ptrdiff_t i = static_cast<ptrdiff_t>(y) * w + x;
            if (s[i]) o[i] = T.crossing[ring_code(s, w, y, x)];
        }
    return out;
}

// Minutiae candidates: (n, 3) int32 rows of (y, x, type) with type 1 = ending
// (crossing number 1) and 2 = bifurcation (crossing number 3).
i32arr detect_minutiae(const u8arr& skeleton, const u8arr& mask) {
    const int h = static_cast<int>(skeleton.shape(0)), w = static_cast<int>(skeleton.shape(1));
    const uint8_t* s = skeleton.data();
    const uint8_t* m = mask.data();
    const Tables& T = tables();
    std::vector<int32_t> rows;
    for (int y = 1; y < h - 1; ++y)
        for (int x = 1; x < w - 1; ++x) {
            ptrdiff_t i = static_cast<ptrdiff_t>(y) * w + x;
            if (!s[i] || !m[i]) continue;
            int cn = T.crossing[ring_code(s, w, y, x)];
            if (cn == 1 || cn == 3) {
                rows.push_back(y);
                rows.push_back(x);
                rows.push_back(cn == 1 ? 1 : 2);
            }
        }
    const py::ssize_t n = static_cast<py::ssize_t>(rows.size() / 3);
    i32arr out({n, static_cast<py::ssize_t>(3)});
    std::copy(rows.begin(), rows.end(), out.mutable_data());
    return out;
}

// Walk every branch leaving each minutia (1 for an ending, up to 3 for a
// bifurcation) for at most max_steps pixels. Returns an int32 array of shape
// (n, 3, 6): per branch (dir_y, dir_x, stop_y, stop_x, steps, reason), where
// (dir_y, dir_x) is the pixel dir_steps along the branch (or the last one),
// reason 0 = no branch, 1 = max_steps reached, 2 = ridge ends,
// 3 = another junction (crossing number >= 3), 4 = leaves the mask.
i32arr trace_branches(const u8arr& skeleton, const u8arr& mask, const i32arr& points, int dir_steps, int max_steps) {
    const int h = static_cast<int>(skeleton.shape(0)), w = static_cast<int>(skeleton.shape(1));
    const uint8_t* s = skeleton.data();
    const uint8_t* m = mask.data();
    const int32_t* pts = points.data();
    const py::ssize_t n = points.shape(0);
    const Tables& T = tables();
    i32arr out({n, static_cast<py::ssize_t>(3), static_cast<py::ssize_t>(6)});
    int32_t* o = out.mutable_data();
    std::fill(o, o + n * 18, 0);
    std::vector<int32_t> stamp(static_cast<size_t>(h) * w, -1);
    int32_t id = 0;
    auto inside = [&](int y, int x) { return y >= 1 && x >= 1 && y < h - 1 && x < w - 1; };
    for (py::ssize_t k = 0; k < n; ++k) {
        const int y0 = pts[k * 3], x0 = pts[k * 3 + 1];
        if (!inside(y0, x0)) continue;
        const int code = ring_code(s, w, y0, x0);
        // starting neighbours: one per run of set pixels around the ring, 4-neighbour preferred
        std::array<int, 4> starts{};
        int nstart = 0;
        for (int a = 0; a < 8 && nstart < 3; ++a) {
            int prev = (a + 7) & 7;
            if (((code >> a) & 1) && !((code >> prev) & 1)) {
                // members of this run; start from one that leads out of the 3x3 block
                int best = a, b = a, first4 = -1;
                bool found = false;
                for (int len = 0; len < 8 && ((code >> b) & 1); ++len, b = (b + 1) & 7) {
                    if ((b & 1) == 0 && first4 < 0) first4 = b;
                    const int my = y0 + DY[b], mx = x0 + DX[b];
                    if (!inside(my, mx)) continue;
                    for (int q = 0; q < 8 && !found; ++q) {
                        const int ny = my + DY[q], nx = mx + DX[q];
                        if (std::abs(ny - y0) <= 1 && std::abs(nx - x0) <= 1) continue;
                        if (s[static_cast<size_t>(ny) * w + nx]) { best = b; found = true; }
                    }
                    if (found) break;
                }
                if (!found && first4 >= 0) best = first4;
                starts[nstart++] = best;
            }
        }
        if (nstart == 0 && code == 255) continue;
        for (int bi = 0; bi < nstart; ++bi) {
            ++id;
            stamp[static_cast<size_t>(y0) * w + x0] = id;
            for (int a = 0; a < 8; ++a)
                if ((code >> a) & 1) stamp[static_cast<size_t>(y0 + DY[a]) * w + x0 + DX[a]] = id;
            int cy = y0 + DY[starts[bi]], cx = x0 + DX[starts[bi]];
            int steps = 1, reason = 1, dy = cy, dx = cx;
            while (true) {
                if (steps == dir_steps) { dy = cy; dx = cx; }
                if (!m[static_cast<size_t>(cy) * w + cx]) { reason = 4; break; }
                if (!inside(cy, cx)) { reason = 4; break; }
                const int c = ring_code(s, w, cy, cx);
                if (T.crossing[c] >= 3) { reason = 3; break; }
                if (steps >= max_steps) { reason = 1; break; }
                int next = -1;
                for (int pass = 0; pass < 2 && next < 0; ++pass)
                    for (int a = pass; a < 8; a += 2) {  // 4-neighbours first
                        if (!((c >> a) & 1)) continue;
                        int ny = cy + DY[a], nx = cx + DX[a];
                        if (stamp[static_cast<size_t>(ny) * w + nx] == id) continue;
                        next = a;
                        break;
                    }
                if (next < 0) { reason = 2; break; }
                stamp[static_cast<size_t>(cy) * w + cx] = id;
                cy += DY[next];
                cx += DX[next];
                ++steps;
            }
            if (steps < dir_steps) { dy = cy; dx = cx; }
            int32_t* r = o + (k * 3 + bi) * 6;
            r[0] = dy; r[1] = dx; r[2] = cy; r[3] = cx; r[4] = steps; r[5] = reason;
        }
    }
    return out;
}


// 4-connected components of a 0/1 image: labels 1..n in raster order of each
// component's first pixel, 0 for background.
py::tuple label4(const u8arr& binary) {
    const int h = static_cast<int>(binary.shape(0)), w = static_cast<int>(binary.shape(1));
    i32arr out({h, w});
    int32_t* lab = out.mutable_data();
    const uint8_t* b = binary.data();
    int32_t n = 0;
    {
        py::gil_scoped_release release;
        const ptrdiff_t size = static_cast<ptrdiff_t>(h) * w;
        std::fill(lab, lab + size, 0);
        std::vector<ptrdiff_t> stack;
        for (ptrdiff_t start = 0; start < size; ++start) {
            if (!b[start] || lab[start]) continue;
            lab[start] = ++n;
            stack.push_back(start);
            while (!stack.empty()) {
                const ptrdiff_t i = stack.back();
                stack.pop_back();
                const int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
                const ptrdiff_t nb[4] = {y > 0 ? i - w : -1, y < h - 1 ? i + w : -1, x > 0 ? i - 1 : -1, x < w - 1 ? i + 1 : -1};
                for (ptrdiff_t j : nb)
                    if (j >= 0 && b[j] && !lab[j]) { lab[j] = n; stack.push_back(j); }
            }
        }
    }
    return py::make_tuple(out, n);
}

// The image with every background region that no 4-connected path joins to the
// image edge set to 1.
u8arr fill_holes(const u8arr& binary) {
    const int h = static_cast<int>(binary.shape(0)), w = static_cast<int>(binary.shape(1));
    u8arr out({h, w});
    uint8_t* o = out.mutable_data();
    const uint8_t* b = binary.data();
    {
        py::gil_scoped_release release;
        const ptrdiff_t size = static_cast<ptrdiff_t>(h) * w;
        std::vector<uint8_t> outside(static_cast<size_t>(size), 0);
        std::vector<ptrdiff_t> stack;
        auto seed = [&](ptrdiff_t i) { if (!b[i] && !outside[i]) { outside[i] = 1; stack.push_back(i); } };
        for (int x = 0; x < w; ++x) { seed(x); seed(static_cast<ptrdiff_t>(h - 1) * w + x); }
        for (int y = 0; y < h; ++y) { seed(static_cast<ptrdiff_t>(y) * w); seed(static_cast<ptrdiff_t>(y) * w + w - 1); }
        while (!stack.empty()) {
            const ptrdiff_t i = stack.back();
            stack.pop_back();
            const int y = static_cast<int>(i / w), x = static_cast<int>(i % w);
            if (y > 0) seed(i - w);
            if (y < h - 1) seed(i + w);
            if (x > 0) seed(i - 1);
            if (x < w - 1) seed(i + 1);
        }
        for (ptrdiff_t i = 0; i < size; ++i) o[i] = !outside[i];
    }
    return out;
}

// Exact squared distances along one line to the lower envelope of parabolas
// (Felzenszwalb & Huttenlocher 2012), in integers: f holds squared distances,
// the envelope's breakpoints are compared as fractions, so no rounding enters.
static void envelope_1d(const int64_t* f, int n, int64_t* d, std::vector<int>& v, std::vector<int64_t>& zn,
                        std::vector<int64_t>& zd) {
    // breakpoint k between parabolas v[k-1] and v[k] is zn[k] / zd[k] (zd > 0); -inf / +inf as flags
    int k = 0;
    v[0] = 0;
    const int64_t big = INT64_MAX / 4;
    zn[0] = -big; zd[0] = 1;
    zn[1] = big; zd[1] = 1;
    for (int q = 1; q < n; ++q) {
        while (true) {
            const int p = v[k];
            const int64_t num = (f[q] + static_cast<int64_t>(q) * q) - (f[p] + static_cast<int64_t>(p) * p);
            const int64_t den = 2 * static_cast<int64_t>(q - p);
            // pop while the new breakpoint lies at or left of the previous one
            const bool left = (zn[k] == -big) ? false : (num * zd[k] <= zn[k] * den);
            if (left) { --k; continue; }
            ++k;
            v[k] = q;
            zn[k] = num; zd[k] = den;
            zn[k + 1] = big; zd[k + 1] = 1;
            break;
        }
    }
    k = 0;
    for (int q = 0; q < n; ++q) {
        while (zn[k + 1] != big && zn[k + 1] < static_cast<int64_t>(q) * zd[k + 1]) ++k;
        const int64_t dq = q - v[k];
        d[q] = dq * dq + f[v[k]];
    }
}

f64arr distance_to_zero(const u8arr& binary) {
    const int h = static_cast<int>(binary.shape(0)), w = static_cast<int>(binary.shape(1));
    f64arr out({h, w});
    double* o = out.mutable_data();
    const uint8_t* b = binary.data();
    {
        py::gil_scoped_release release;
        // no zero in a line: a distance beyond any in the image
        const int64_t far = static_cast<int64_t>(h + w) * (h + w) + 1;
        std::vector<int64_t> g(static_cast<size_t>(h) * w), f(std::max(h, w)), d(std::max(h, w));
        std::vector<int> v(std::max(h, w) + 1);
        std::vector<int64_t> zn(std::max(h, w) + 2), zd(std::max(h, w) + 2);
        for (int x = 0; x < w; ++x) {
            for (int y = 0; y < h; ++y) f[y] = b[static_cast<ptrdiff_t>(y) * w + x] ? far : 0;
            envelope_1d(f.data(), h, d.data(), v, zn, zd);
            for (int y = 0; y < h; ++y) g[static_cast<ptrdiff_t>(y) * w + x] = d[y];
        }
        for (int y = 0; y < h; ++y) {
            envelope_1d(g.data() + static_cast<ptrdiff_t>(y) * w, w, d.data(), v, zn, zd);
            for (int x = 0; x < w; ++x) o[static_cast<ptrdiff_t>(y) * w + x] = std::sqrt(static_cast<double>(d[x]));
        }
    }
    return out;
}

// Separable filters of extraction, line by line in double precision. Exactness
// matters more than speed here (they must give what scipy.ndimage gives, so
// templates do not change with the implementation): no fast-math reassociation
// or FMA contraction in these two.
#pragma GCC push_options
#pragma GCC optimize("no-fast-math", "fp-contract=off")
namespace {
// Index of position i (may be outside 0..n-1) under a boundary mode: 0 reflect
// (half-sample symmetric), 1 nearest, 2 constant (-1: the constant 0).
inline int extend_index(int i, int n, int mode) {
    if (i >= 0 && i < n) return i;
    if (mode == 1) return i < 0 ? 0 : n - 1;
    if (mode == 2) return -1;
    if (n == 1) return 0;
    const int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

// out[line] = sum over taps of w[k] * in[line + k - r], along axis 0 (rows) or 1 (columns).
// Symmetric kernels: in[0] * w[r], then the pairs from the farthest in; antisymmetric the same with differences.
template <typename T>
void correlate_lines(const T* in, T* out, int h, int w, const double* wt, int r, int axis, int mode, int symmetry) {
    const int n = axis == 0 ? h : w, lines = axis == 0 ? w : h;
    std::vector<double> acc(static_cast<size_t>(axis == 0 ? w : 1));
    std::vector<double> ext(static_cast<size_t>(n + 2 * r));
    if (axis == 1) {
        for (int y = 0; y < lines; ++y) {
            const T* row = in + static_cast<ptrdiff_t>(y) * w;
            for (int i = -r; i < n + r; ++i) {
                const int j = extend_index(i, n, mode);
                ext[i + r] = j < 0 ? 0.0 : static_cast<double>(row[j]);
            }
            T* o = out + static_cast<ptrdiff_t>(y) * w;
            for (int x = 0; x < n; ++x) {
                const double* c = ext.data() + x + r;
                double t;
                if (symmetry > 0) {
                    t = c[0] * wt[r];
                    for (int k = r; k >= 1; --k) t += (c[-k] + c[k]) * wt[r - k];
                } else if (symmetry < 0) {
                    t = c[0] * wt[r];
                    for (int k = r; k >= 1; --k) t += (c[-k] - c[k]) * wt[r - k];
                } else {
                    t = c[r] * wt[2 * r];
                    for (int k = -r; k < r; ++k) t += c[k] * wt[r + k];
                }
                o[x] = static_cast<T>(t);
            }
        }
        return;
    }
    // axis 0: whole rows at a time, so the inner loop runs along memory
    auto row = [&](int i) -> const T* {
        const int j = extend_index(i, n, mode);
        return j < 0 ? nullptr : in + static_cast<ptrdiff_t>(j) * w;
    };
    for (int y = 0; y < n; ++y) {
        double* a = acc.data();
        const int first = symmetry != 0 ? 0 : r;
        const T* c0 = row(y + first);
        const double w0 = symmetry != 0 ? wt[r] : wt[2 * r];
        for (int x = 0; x < w; ++x) a[x] = (c0 ? static_cast<double>(c0[x]) : 0.0) * w0;
        if (symmetry != 0) {
            for (int k = r; k >= 1; --k) {
                const T* m = row(y - k);
                const T* p = row(y + k);
                const double wk = wt[r - k];
                for (int x = 0; x < w; ++x) {
                    const double vm = m ? static_cast<double>(m[x]) : 0.0, vp = p ? static_cast<double>(p[x]) : 0.0;
                    a[x] += (symmetry > 0 ? vm + vp : vm - vp) * wk;
                }
            }
        } else {
            for (int k = -r; k < r; ++k) {
                const T* c = row(y + k);
                for (int x = 0; x < w; ++x) a[x] += (c ? static_cast<double>(c[x]) : 0.0) * wt[r + k];
            }
        }
        T* o = out + static_cast<ptrdiff_t>(y) * w;
        for (int x = 0; x < w; ++x) o[x] = static_cast<T>(a[x]);
    }
}

// Box mean of `size` samples along an axis (reflect boundary): a running sum, divided at each output.
template <typename T>
void box_lines(const T* in, T* out, int h, int w, int size, int axis) {
    const int before = size / 2, after = size - before - 1;
    const int n = axis == 0 ? h : w, lines = axis == 0 ? w : h;
    const ptrdiff_t step = axis == 0 ? w : 1, line_step = axis == 0 ? 1 : w;
    (void)after;
    for (int l = 0; l < lines; ++l) {
        const T* src = in + l * line_step;
        T* dst = out + l * line_step;
        auto at = [&](int i) { return static_cast<double>(src[extend_index(i, n, 0) * step]); };
        double sum = 0.0;
        for (int i = -before; i < size - before; ++i) sum += at(i);
        dst[0] = static_cast<T>(sum / size);
        for (int i = 1; i < n; ++i) {
            sum += at(i + size - before - 1) - at(i - before - 1);
            dst[i * step] = static_cast<T>(sum / size);
        }
    }
}
}  // namespace

template <typename T>
py::array_t<T, py::array::c_style> correlate_axis(const py::array_t<T, py::array::c_style>& image,
                                                 const py::array_t<double, py::array::c_style>& weights, int axis,
                                                 int mode, int symmetry) {
    const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
    const int r = static_cast<int>(weights.shape(0) / 2);
    py::array_t<T, py::array::c_style> out({h, w});
    {
        py::gil_scoped_release release;
        correlate_lines<T>(image.data(), out.mutable_data(), h, w, weights.data(), r, axis, mode, symmetry);
    }
    return out;
}

template <typename T>
py::array_t<T, py::array::c_style> box_axis(const py::array_t<T, py::array::c_style>& image, int size, int axis) {
    const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
    py::array_t<T, py::array::c_style> out({h, w});
    {
        py::gil_scoped_release release;
        box_lines<T>(image.data(), out.mutable_data(), h, w, size, axis);
    }
    return out;
}
#pragma GCC pop_options

PYBIND11_MODULE(_native, m) {
    m.doc() = "biomatch native kernels (extraction hot loops)";
    m.attr("ABI_VERSION") = 3;
    m.def("oriented_filter", &oriented_filter, py::arg("image"), py::arg("mask"), py::arg("orientation"), py::arg("period"),
          py::arg("across_sigma_periods"), py::arg("sigma_along_px"));
    m.def("thin", &thin, py::arg("binary"));
    m.def("crossing_numbers", &crossing_numbers, py::arg("skeleton"));
    m.def("detect_minutiae", &detect_minutiae, py::arg("skeleton"), py::arg("mask"));
    m.def("trace_branches", &trace_branches, py::arg("skeleton"), py::arg("mask"), py::arg("points"), py::arg("dir_steps"),
          py::arg("max_steps"));
    m.def("label4", &label4, py::arg("binary"));
    m.def("fill_holes", &fill_holes, py::arg("binary"));
    m.def("distance_to_zero", &distance_to_zero, py::arg("binary"));
    m.def("correlate_axis", &correlate_axis<float>, py::arg("image"), py::arg("weights"), py::arg("axis"), py::arg("mode"),
          py::arg("symmetry"));
    m.def("correlate_axis", &correlate_axis<double>, py::arg("image"), py::arg("weights"), py::arg("axis"), py::arg("mode"),
          py::arg("symmetry"));
    m.def("box_axis", &box_axis<float>, py::arg("image"), py::arg("size"), py::arg("axis"));
    m.def("box_axis", &box_axis<double>, py::arg("image"), py::arg("size"), py::arg("axis"));
}
