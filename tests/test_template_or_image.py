"""One rule tells a template file from an image, by content: the library (Gallery) and the CLI use it."""

from __future__ import annotations

import io

import numpy as np
import pytest

import biomatch as bm
from biomatch.errors import FormatError, GalleryError
from biomatch.formats import is_template, write_ansi, write_iso


@pytest.fixture(scope="module")
def print_and_template():
    """A synthetic impression as PNG bytes, and its extracted template."""
    from PIL import Image

    from biomatch.synthetic import make_finger, make_impression

    pixels = make_impression(make_finger(3, seed=7), 0).pixels
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", dpi=(500, 500))
    return buf.getvalue(), bm.extract(pixels, ppi=500)


def test_is_template_by_first_bytes(print_and_template, tmp_path):
    png, t = print_and_template
    for data in (t.to_bytes(), write_iso(t), write_iso(t, "2011"), write_ansi(t), write_ansi(t, "2009")):
        assert is_template(data)
    assert not is_template(png)
    assert not is_template(b"1.001:230\x1d1.002:0502")  # an ANSI/NIST-ITL transaction: images are the decoder's
    assert not is_template(b"")
    (tmp_path / "t.png").write_bytes(write_iso(t))
    assert is_template(tmp_path / "t.png")
    with pytest.raises(FormatError, match="missing.iso: file not found"):
        is_template(tmp_path / "missing.iso")
    with pytest.raises(FormatError, match="source"):
        is_template(3)


def test_gallery_goes_by_content_not_by_name(print_and_template, tmp_path):
    png, t = print_and_template
    template_named_png = tmp_path / "finger.png"
    template_named_png.write_bytes(write_iso(t))
    image_named_iso = tmp_path / "scan.iso"
    image_named_iso.write_bytes(png)
    with bm.Gallery.open(tmp_path / "g.db") as g:
        g.enroll("a", {2: template_named_png}, gallery="x", operator="t")
        g.enroll("b", {2: image_named_iso}, gallery="x", operator="t")
        assert g.originals("a", gallery="x") == []  # a template: nothing to keep
        assert [o[1:] for o in g.originals("b", gallery="x")][0][0] == "image"  # an image, kept as the original
        a, b = g.get("a", gallery="x").fingers[2], g.get("b", gallery="x").fingers[2]
        assert len(a) == len(b) == len(t)
        np.testing.assert_array_equal(b.minutiae["x"], t.minutiae["x"])
        with pytest.raises(GalleryError, match=r"fingers\[2\]: .*nope.bmp: file not found"):
            g.enroll("c", {2: tmp_path / "nope.bmp"}, gallery="x", operator="t")


def test_cli_goes_by_content_not_by_name(print_and_template, tmp_path):
    from typer.testing import CliRunner

    from biomatch.cli import app

    png, t = print_and_template
    (tmp_path / "probe.png").write_bytes(write_ansi(t))  # a template named like an image
    (tmp_path / "ref.iso").write_bytes(png)  # an image named like a template
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "probe.png"), str(tmp_path / "ref.iso"), "--json"])
    assert res.exit_code == 0, res.output
    assert '"score"' in res.output
