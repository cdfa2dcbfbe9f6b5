"""Train the ridge model shipped as ``biomatch/data/ridge_model.onnx`` from scratch.

    pip install ".[train]"
    python -m training.train_ridge_model            # data, training, export (fixed seed)
    python -m training.train_ridge_model --steps 50 --out /tmp/x.onnx   # a quick try

Only prints made by the project train it: finger masters of
:func:`biomatch.synthetic.make_finger` under :data:`TRAIN_SEED` (evaluation
uses other seeds: ``benchmarks/bench_synthetic.py`` uses 2026), rendered by
:func:`biomatch.synthetic_livescan.render_livescan` (sensors, dry / wet /
faint skin, creases, scars, scale, WSQ). No real image, no other project's
weights or labels.

Targets (at 250 ppi, the network's resolution): the clean ridge map (> 0 on
ridges), weighted by the contact mask, and the contact mask itself. Loss:
binary cross-entropy of both, the ridge term only inside the contact area.

The data set is cached in ``training/cache/`` and training writes a
checkpoint every :data:`CHECKPOINT_EVERY` steps there; a rerun with the same
arguments resumes from the last checkpoint. Needs jax, optax and onnx (the
``train`` extra); the product needs none of them.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from biomatch import ridge_model as RM
from biomatch import synthetic as S
from biomatch.synthetic_livescan import render_livescan

#: Seed of the training fingers (never used for a reported figure).
TRAIN_SEED = 7
N_MASTERS = 200
IMPRESSIONS_PER_MASTER = 6
CROPS_PER_IMAGE = 4
CROP_HALF_PX = 96  # at 250 ppi (192 px at 500 ppi)
BATCH = 16
STEPS = 4000
LEARNING_RATE = 2e-3
CHECKPOINT_EVERY = 200
ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
PACKAGE_MODEL = ROOT.parent / "biomatch" / "data" / RM.MODEL_FILE


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def _finger_samples(finger: int):
    rng = np.random.default_rng([TRAIN_SEED, finger])
    master = S.make_finger(finger, TRAIN_SEED)
    xs, rs, ms = [], [], []
    for j in range(IMPRESSIONS_PER_MASTER):
        live = render_livescan(S.make_impression(master, j), TRAIN_SEED)
        x = RM.network_input(live.pixels)
        ridge = RM.half_resolution(live.ridge)
        mask = RM.half_resolution(live.mask.astype(np.float32))
        _, h, w = x.shape
        c = CROP_HALF_PX
        if h < c or w < c:
            pad = ((0, max(c - h, 0)), (0, max(c - w, 0)))
            x = np.stack([np.pad(ch, pad) for ch in x])
            ridge, mask = np.pad(ridge, pad), np.pad(mask, pad)
            _, h, w = x.shape
        fg = np.argwhere(mask > 0.5)
        for _ in range(CROPS_PER_IMAGE):
            if len(fg) and rng.uniform() < 0.85:  # mostly around the print, some background
                cy, cx = fg[rng.integers(len(fg))]
            else:
                cy, cx = rng.integers(h), rng.integers(w)
            y0 = int(np.clip(cy - c // 2, 0, h - c))
            x0 = int(np.clip(cx - c // 2, 0, w - c))
            xs.append(x[:, y0:y0 + c, x0:x0 + c])
            rs.append(ridge[y0:y0 + c, x0:x0 + c])
            ms.append(mask[y0:y0 + c, x0:x0 + c])
    return np.stack(xs), np.stack(rs), np.stack(ms)


def training_data(n_masters: int, workers: int):
    # keyed by the generator's and the input stage's sources: a change there makes new data
    import biomatch

    h = hashlib.sha256()
    for name in ("synthetic.py", "synthetic_livescan.py", "ridge_model.py"):
        h.update((Path(biomatch.__file__).parent / name).read_bytes())
    key = f"{TRAIN_SEED}_{n_masters}x{IMPRESSIONS_PER_MASTER}x{CROPS_PER_IMAGE}_{h.hexdigest()[:10]}"
    path = CACHE / f"ridge_data_{key}.npz"
    if path.exists():
        d = np.load(path)
        return d["x"], d["ridge"], d["mask"], key
    t0 = time.time()
    with get_context("fork").Pool(workers) as pool:
        parts = pool.map(_finger_samples, range(n_masters), chunksize=4)
    x = np.concatenate([p[0] for p in parts])
    ridge = np.concatenate([p[1] for p in parts])
    mask = np.concatenate([p[2] for p in parts])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, ridge=ridge.astype(np.float16), mask=mask.astype(np.float16))
    print(f"data: {len(x)} crops from {n_masters} fingers in {time.time() - t0:.0f} s -> {path}", flush=True)
    return x, ridge, mask, key


# ---------------------------------------------------------------------------
# model (jax): the forward pass mirrors the ONNX graph built in export()
# ---------------------------------------------------------------------------
def init_params(seed: int):
    rng = np.random.default_rng(seed)
    params = {}
    for name, cin, cout, k, _s, _d in RM.ARCHITECTURE:
        fan_in = cin * k * k
        params[name] = {
            "w": (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32),
            "b": np.zeros(cout, np.float32),
        }
    return params


def forward(params, x):
    import jax
    import jax.numpy as jnp

    layers = {name: (k, s, d) for name, _ci, _co, k, s, d in RM.ARCHITECTURE}

    def conv(name, h, relu=True):
        k, s, d = layers[name]
        p = d * (k // 2)
        y = jax.lax.conv_general_dilated(h, params[name]["w"], (s, s), [(p, p), (p, p)], rhs_dilation=(d, d),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        y = y + params[name]["b"][None, :, None, None]
        return jax.nn.relu(y) if relu else y

    e2 = conv("e2", conv("e1", x))
    d = conv("d4", conv("d3", conv("d2", conv("d1", e2))))
    up = jnp.repeat(jnp.repeat(d, 2, axis=2), 2, axis=3)
    return conv("out", conv("u1", jnp.concatenate([up, e2], axis=1)), relu=False)


def loss_fn(params, x, ridge, mask):
    import jax.numpy as jnp
    from jax.nn import softplus

    out = forward(params, x)
    r, m = out[:, 0], out[:, 1]
    # BCE with logits: softplus(z) - t z
    target_r = (ridge > 0).astype(jnp.float32)
    weight = (mask > 0.5).astype(jnp.float32)
    ridge_loss = jnp.sum((softplus(r) - target_r * r) * weight) / jnp.maximum(jnp.sum(weight), 1.0)
    mask_loss = jnp.mean(softplus(m) - mask * m)
    return ridge_loss + 0.5 * mask_loss, (ridge_loss, mask_loss)


def _augment(rng, x, ridge, mask):
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    def f(a):
        a = np.rot90(a, k, axes=(-2, -1))
        return a[..., ::-1] if flip else a
    return (np.ascontiguousarray(f(x)), np.ascontiguousarray(f(ridge), dtype=np.float32),
            np.ascontiguousarray(f(mask), dtype=np.float32))


def train(steps: int, n_masters: int, workers: int, seed: int = 0):
    import jax
    import optax

    x_all, r_all, m_all, data_key = training_data(n_masters, workers)
    n_val = max(len(x_all) // 20, BATCH)
    x_val, r_val, m_val = x_all[-n_val:], r_all[-n_val:].astype(np.float32), m_all[-n_val:].astype(np.float32)
    x_tr, r_tr, m_tr = x_all[:-n_val], r_all[:-n_val], m_all[:-n_val]
    schedule = optax.warmup_cosine_decay_schedule(0.0, LEARNING_RATE, 100, max(steps, 101), LEARNING_RATE * 0.02)
    opt = optax.adam(schedule)
    ckpt = CACHE / f"ridge_ckpt_seed{seed}_{steps}_{n_masters}_{data_key}.npz"
    params = jax.tree_util.tree_map(jax.numpy.asarray, init_params(seed))
    opt_state = opt.init(params)
    start = 0
    if ckpt.exists():
        d = np.load(ckpt, allow_pickle=True)
        start = int(d["step"])
        params = jax.tree_util.tree_map(jax.numpy.asarray, d["params"].item())
        leaves = list(d["opt_leaves"])
        opt_state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt_state), [jax.numpy.asarray(v) for v in leaves])
        print(f"resumed at step {start} from {ckpt}", flush=True)

    @jax.jit
    def step_fn(params, opt_state, x, r, m):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, r, m)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, parts

    eval_fn = jax.jit(loss_fn)
    rng = np.random.default_rng([seed, start])
    t0 = time.time()
    for step in range(start, steps):
        idx = rng.integers(len(x_tr), size=BATCH)
        x, r, m = _augment(rng, x_tr[idx], r_tr[idx], m_tr[idx])
        params, opt_state, loss, (rl, ml) = step_fn(params, opt_state, x, r, m)
        if (step + 1) % 50 == 0 or step == start:
            print(f"step {step + 1}/{steps} loss {float(loss):.4f} ridge {float(rl):.4f} mask {float(ml):.4f} "
                  f"{(time.time() - t0) / (step + 1 - start):.2f} s/step", flush=True)
        if (step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == steps:
            vl = np.mean([float(eval_fn(params, x_val[i:i + BATCH], r_val[i:i + BATCH], m_val[i:i + BATCH])[0])
                          for i in range(0, n_val - BATCH + 1, BATCH)])
            print(f"  validation loss {vl:.4f}", flush=True)
            host = jax.tree_util.tree_map(np.asarray, params)
            leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(opt_state)]
            tmp = ckpt.with_suffix(".tmp.npz")
            np.savez(tmp, step=step + 1, params=np.array(host, dtype=object),
                     opt_leaves=np.array(leaves, dtype=object))
            tmp.replace(ckpt)
    return jax.tree_util.tree_map(np.asarray, params)


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------
def export(params, out: Path) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    layers = {name: (k, s, d) for name, _ci, _co, k, s, d in RM.ARCHITECTURE}

    def conv(name, x, relu=True):
        k, s, d = layers[name]
        p = d * (k // 2)
        inits.append(numpy_helper.from_array(np.asarray(params[name]["w"], np.float32), f"{name}.w"))
        inits.append(numpy_helper.from_array(np.asarray(params[name]["b"], np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.conv"], kernel_shape=[k, k],
                                      strides=[s, s], dilations=[d, d], pads=[p, p, p, p]))
        if not relu:
            return f"{name}.conv"
        nodes.append(helper.make_node("Relu", [f"{name}.conv"], [name]))
        return name

    e2 = conv("e2", conv("e1", "input"))
    d = conv("d4", conv("d3", conv("d2", conv("d1", e2))))
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up.scales"))
    nodes.append(helper.make_node("Resize", [d, "", "up.scales"], ["up"], mode="nearest", nearest_mode="floor",
                                  coordinate_transformation_mode="asymmetric"))
    nodes.append(helper.make_node("Concat", ["up", e2], ["cat"], axis=1))
    y = conv("out", conv("u1", "cat"), relu=False)
    graph = helper.make_graph(
        nodes, RM.MODEL_VERSION,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, "h", "w"])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 2, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="biomatch-training")
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _pin_hash(digest: str) -> None:
    """Write the new weights' hash into biomatch/ridge_model.py (the shipped file's check)."""
    path = ROOT.parent / "biomatch" / "ridge_model.py"
    text = path.read_text()
    path.write_text(re.sub(r'MODEL_SHA256 = "[^"]*"', f'MODEL_SHA256 = "{digest}"', text, count=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--masters", type=int, default=N_MASTERS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="weight initialisation and batch order")
    ap.add_argument("--out", type=Path, default=PACKAGE_MODEL)
    args = ap.parse_args(argv)
    params = train(args.steps, args.masters, args.workers, args.seed)
    digest = export(params, args.out)
    print(f"wrote {args.out} sha256 {digest}")
    if args.out.resolve() == PACKAGE_MODEL.resolve():
        _pin_hash(digest)
        print("pinned the hash in biomatch/ridge_model.py")


if __name__ == "__main__":
    main()
