"""The public API: every name in ``biomatch.__all__`` resolves, and ``import biomatch`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import biomatch


def test_every_name_in_all_resolves():
    missing = [name for name in biomatch.__all__ if not hasattr(biomatch, name)]
    assert missing == []
    assert set(biomatch.__all__) <= set(dir(biomatch))


def test_unknown_name_is_an_attribute_error_naming_it():
    try:
        biomatch.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("biomatch.no_such_name resolved")


def test_import_biomatch_does_not_load_heavy_modules():
    heavy = ["faiss", "ray", "matplotlib", "numba", "onnxruntime", "sqlite3", "typer", "rich", "scipy"]
    code = (
        "import json, sys; import biomatch; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_extracting_an_image_does_not_load_scipy_or_every_pil_plugin(tmp_path):
    # the cold start of a one-shot `biomatch extract`: scipy.ndimage's import alone is ~0.2 s, numpy.ma's 20 ms,
    # PIL's full plugin scan ~40 ms; extraction needs none of them
    from PIL import Image

    y, x = np.mgrid[0:300, 0:260]
    ridges = (127 + 90 * np.sin(2 * np.pi * (x * np.cos(0.4) + y * np.sin(0.4)) / 9.0)).astype(np.uint8)
    path = tmp_path / "print.tif"
    Image.fromarray(ridges).save(path, dpi=(500, 500))
    heavy = ["scipy", "numba", "onnxruntime", "numpy.ma", "PIL.PsdImagePlugin", "PIL.EpsImagePlugin"]
    code = (
        "import json, sys; import biomatch; "
        f"t = biomatch.extract({str(path)!r}); "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
