"""The depth PNG's scale text chunk: what `save_depth_png16` writes, both readers (`load_depth_png16` and the data
loaders' `decode_depth`) read the same way, and a bad chunk gets the same error from both."""

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mesa_hf.data.decoders import decode_depth
from mesa_hf.depth_png import DEPTH_PNG_SCALE_KEY, depth_png_scale_text, png_text_scale
from mesa_hf.evaluation.io import load_depth_png16, save_depth_png16


def _png_with_chunk(path, units, chunk):
    info = PngImagePlugin.PngInfo()
    info.add_text(DEPTH_PNG_SCALE_KEY, chunk)
    Image.fromarray(units.astype(np.uint16)).save(path, pnginfo=info)
    return path


def test_scale_text_parses_back():
    assert depth_png_scale_text(0.001) == "0.001 m per unit"
    assert png_text_scale({DEPTH_PNG_SCALE_KEY: depth_png_scale_text(0.0002)}, "x") == pytest.approx(0.0002)
    assert png_text_scale({"other": "1"}, "x") is None


def test_both_readers_use_the_written_scale(tmp_path):
    depth = np.array([[1.5, 0.0], [2.25, 4.0]], dtype=np.float32)
    path = save_depth_png16(tmp_path / "d.png", depth, scale=0.0005)
    with Image.open(path) as im:
        assert im.text[DEPTH_PNG_SCALE_KEY] == "0.0005 m per unit"
        np.testing.assert_array_equal(np.asarray(im), [[3000, 0], [4500, 8000]])
    np.testing.assert_allclose(load_depth_png16(path), depth, atol=1e-6)
    np.testing.assert_allclose(decode_depth(path), depth, atol=1e-6)


@pytest.mark.parametrize("chunk", ["m per unit", ""])
def test_bad_chunk_is_named_by_both_readers(tmp_path, chunk):
    path = _png_with_chunk(tmp_path / "bad.png", np.full((2, 2), 1000), chunk)
    message = rf"bad\.png: unreadable 'depth_scale' text chunk '{chunk}'"
    with pytest.raises(ValueError, match=message):
        load_depth_png16(path)
    with pytest.raises(ValueError, match=message):
        decode_depth(path)
