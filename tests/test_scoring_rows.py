"""scoring._expand_mask: each valid cell's bit repeated over its direction layers, nothing past the cells."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from biomatch import descriptors as d
from biomatch import scoring


def _per_bit(mask):
    """The definition, bit by bit: value bit c * N_DIRECTIONAL + k is valid when cell c is."""
    cells = np.unpackbits(mask, axis=1, bitorder="little")[:, : d.N_CELLS].astype(bool)
    out = np.zeros((mask.shape[0], d.DESCRIPTOR_BYTES * 8), dtype=bool)
    for c in range(d.N_CELLS):
        for k in range(d.N_DIRECTIONAL):
            out[:, c * d.N_DIRECTIONAL + k] = cells[:, c]
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 1.0))
def test_expand_mask_repeats_each_cell_over_its_layers(n, seed, density):
    rng = np.random.default_rng(seed)
    mask = np.packbits(rng.random((n, d.MASK_BYTES * 8)) < density, axis=1, bitorder="little")  # padding too
    got = scoring._expand_mask(mask)
    assert got.dtype == np.uint64 and got.shape == (n, d.DESCRIPTOR_BYTES // 8)
    bits = np.unpackbits(got.view(np.uint8), axis=1, bitorder="little").astype(bool)
    np.testing.assert_array_equal(bits, _per_bit(mask))
