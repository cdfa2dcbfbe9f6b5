"""The public API: every name in ``biomatch.__all__`` resolves, and ``import biomatch`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

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
