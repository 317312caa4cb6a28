"""The two preprocessing modes a model can ask for (letterbox, resize) and their box mapping."""

from __future__ import annotations

import numpy as np
import pytest

from transformer import geometry as G

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(7)


def image(w: int, h: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_letterbox_mode_is_the_darknet_letterbox():
    rgb = image(640, 480)
    x, lb = G.preprocess(rgb, 416, 416, "letterbox")
    ref, ref_lb = G.letterbox(rgb, 416, 416)
    assert lb == ref_lb and np.array_equal(x, ref)
    u, ulb = G.preprocess_uint8(rgb, 416, 416, "letterbox")
    ref_u, _ = G.letterbox_uint8(rgb, 416, 416)
    assert ulb == ref_lb and np.array_equal(u, ref_u)


def test_resize_mode_fills_the_canvas_with_the_same_bilinear():
    # A source with the network's aspect ratio letterboxes without bars: that is exactly a resize.
    rgb = image(832, 624)
    x, lb = G.preprocess(rgb, 416, 312, "resize")
    ref, ref_lb = G.letterbox(rgb, 416, 312)
    assert (ref_lb.new_w, ref_lb.new_h, ref_lb.dx, ref_lb.dy) == (416, 312, 0, 0)
    assert lb == ref_lb and np.array_equal(x, ref)
    # Another aspect: no grey bars, every pixel comes from the image.
    rgb = image(640, 360)
    x, lb = G.preprocess(rgb, 416, 416, "resize")
    assert lb == G.resize_params(640, 360, 416, 416)
    assert (lb.new_w, lb.new_h, lb.dx, lb.dy, lb.box_offset) == (416, 416, 0, 0, (0.0, 0.0))
    assert x.shape == (3, 416, 416) and x.dtype == np.float32
    u, _ = G.preprocess_uint8(rgb, 416, 416, "resize")
    assert np.array_equal(u, np.rint(x * np.float32(255)).astype(np.uint8))
    # Darknet's resize keeps the corners (align-corners bilinear): first pixel of each plane.
    assert np.allclose(x[:, 0, 0], rgb[0, 0] / 255.0)


def test_resize_boxes_scale_each_axis_back():
    lb = G.resize_params(640, 360, 416, 416)
    net = np.array([[208.0, 208.0, 104.0, 52.0]])
    back = G.unletterbox_boxes(net, lb)
    np.testing.assert_allclose(back, [[320.0, 180.0, 160.0, 45.0]])
    np.testing.assert_allclose(G.letterbox_boxes(back, lb), net)


def test_unknown_mode_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="mode"):
        G.preprocess(image(8, 8), 32, 32, "crop")
    with pytest.raises(ValueError):
        G.resize_params(0, 10, 32, 32)
