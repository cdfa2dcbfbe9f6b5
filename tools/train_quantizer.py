"""Train the index's coarse quantiser: the IVF centroids every gallery index shares.

Every position partition of every index (one store, or each shard of a
sharded gallery) assigns codes to the same :data:`biomatch.index.IVF_NLIST`
lists, so that a search visits the same lists everywhere and a sharded
gallery's merged k-NN equal one store's (:mod:`biomatch.distributed`). The
centroids therefore cannot be trained on a gallery's own codes: they are
trained once, here, on index codes of synthetic fingers
(:func:`biomatch.synthetic.template_batch`, fixed seed), and shipped as
``biomatch/data/ivf_quantizer.npy`` (uint8, ``IVF_NLIST x CODE_BYTES``); the
index version names its SHA-256, so that indexes built with other centroids
are rebuilt.

Run (about a minute on one core)::

    python -m tools.train_quantizer
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "biomatch" / "data" / "ivf_quantizer.npy"


def training_codes(n_codes: int, seed: int) -> np.ndarray:
    """Index codes (:func:`biomatch.index.finger_codes`) of synthetic fingers, ``n_codes`` rows."""
    from biomatch.descriptors import encode
    from biomatch.index import finger_codes
    from biomatch.synthetic import template_batch

    parts, total, first = [], 0, 0
    while total < n_codes:
        for block in template_batch(1000, 1, seed=seed, first_finger=first):
            for t in block.templates():
                c = finger_codes(encode(t)).codes
                parts.append(c)
                total += c.shape[0]
        first += 1000
    return np.ascontiguousarray(np.concatenate(parts)[:n_codes])


def main(argv=None) -> int:
    from biomatch.index import CODE_BITS, IVF_NLIST

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-list", type=int, default=40, help="training codes per list")
    ap.add_argument("--seed", type=int, default=19794)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)  # one thread: the same centroids on every machine
    t0 = time.perf_counter()
    codes = training_codes(IVF_NLIST * args.per_list, args.seed)
    t1 = time.perf_counter()
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(CODE_BITS), CODE_BITS, IVF_NLIST)
    ivf.cp.seed = args.seed
    ivf.train(codes)
    quantizer = faiss.downcast_IndexBinary(ivf.quantizer)
    centroids = faiss.vector_to_array(quantizer.xb).reshape(IVF_NLIST, CODE_BITS // 8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, centroids)
    # balance of the lists on the training codes (a check, not a tuning target)
    _, assign = quantizer.search(codes, 1)
    sizes = np.bincount(assign.ravel(), minlength=IVF_NLIST)
    print(f"{codes.shape[0]} codes from synthetic fingers in {t1 - t0:.1f} s, trained in {time.perf_counter() - t1:.1f} s; "
          f"list sizes min {sizes.min()} median {int(np.median(sizes))} max {sizes.max()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
