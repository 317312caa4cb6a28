"""Darknet-exact letterbox and box mapping (transformer.geometry)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer import geometry
from transformer.geometry import (
    PREPROCESS_MODES,
    Letterbox,
    clip_boxes_cxcywh,
    letterbox,
    letterbox_boxes,
    letterbox_params,
    letterbox_uint8,
    preprocess,
    preprocess_params,
    preprocess_uint8,
    resize_params,
    unletterbox_boxes,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data"
DOG = DATA / "dog_tensors"
f32 = np.float32


# --- loop reference: the bit-exact port from tests/data/dog_tensors/README.txt ------------------
# Only change: a 1-sample output axis uses scale 0 (Darknet divides by zero there; documented in
# transformer.geometry). For the horizontal axis that path is never read (last column copies).


def ref_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    C, H, W = im.shape
    ws = f32(0) if w == 1 else f32(W - 1) / f32(w - 1)
    hs = f32(0) if h == 1 else f32(H - 1) / f32(h - 1)
    part = np.empty((C, H, w), np.float32)
    for c in range(w):
        if c == w - 1 or W == 1:
            part[:, :, c] = im[:, :, W - 1]
        else:
            sx = f32(c) * ws
            ix = int(sx)
            dx = f32(sx - f32(ix))
            part[:, :, c] = (f32(1) - dx) * im[:, :, ix] + dx * im[:, :, ix + 1]
    out = np.empty((C, h, w), np.float32)
    for r in range(h):
        sy = f32(r) * hs
        iy = int(sy)
        dy = f32(sy - f32(iy))
        out[:, r, :] = (f32(1) - dy) * part[:, iy, :]
        if r == h - 1 or H == 1:
            continue
        out[:, r, :] += dy * part[:, iy + 1, :]
    return out


def ref_letterbox(u8: np.ndarray, w: int, h: int) -> np.ndarray:
    im = u8.transpose(2, 0, 1).astype(np.float32) / f32(255.0)
    C, H, W = im.shape
    if f32(w) / f32(W) < f32(h) / f32(H):
        nw, nh = w, (H * w) // W
    else:
        nh, nw = h, (W * h) // H
    nw, nh = max(nw, 1), max(nh, 1)
    box = np.full((C, h, w), 0.5, np.float32)
    box[:, (h - nh) // 2 : (h - nh) // 2 + nh, (w - nw) // 2 : (w - nw) // 2 + nw] = ref_resize(im, nw, nh)
    return box


def ref_resize_uint8(u8: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet ``resize_image(load_image_color(...), w, h)`` quantised like the uint8 wire."""
    im = u8.transpose(2, 0, 1).astype(np.float32) / f32(255.0)
    return np.rint(ref_resize(im, w, h) * f32(255)).astype(np.uint8)


# --- vectorised reference: the numpy implementation the transformer ran before the C kernel -----
# (transformer/_letterbox.c). Same float32 operations as the loops above, fast enough for large
# images; never used at run time.


def _axis_taps_reference(n_src: int, n_dst: int, *, last_copies: bool):
    scale = f32(0.0) if n_dst == 1 else f32(n_src - 1) / f32(n_dst - 1)
    pos = np.arange(n_dst, dtype=f32) * scale
    i0 = pos.astype(np.intp)
    frac = pos - i0.astype(f32)
    np.minimum(i0, n_src - 1, out=i0)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w0 = f32(1.0) - frac
    w1 = frac.copy()
    sel = slice(None) if n_src == 1 else slice(n_dst - 1, None)
    if last_copies:  # horizontal: the last column copies the last source column
        i0[sel] = n_src - 1
        i1[sel] = n_src - 1
        w0[sel] = 1.0
    else:  # vertical: the last row has no dy * part[iy+1] term
        i1[sel] = i0[sel]
    w1[sel] = 0.0
    return i0, i1, w0, w1


def reference_resize(rgb: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Darknet resize_image of rgb / 255 (HWC uint8) as float32 [3, new_h, new_w], vectorised."""
    src_h, src_w = rgb.shape[:2]
    ix0, ix1, wx0, wx1 = _axis_taps_reference(src_w, new_w, last_copies=True)
    iy0, iy1, wy0, wy1 = _axis_taps_reference(src_h, new_h, last_copies=False)
    planes = rgb.transpose(2, 0, 1)
    part = np.divide(planes[:, :, ix0], f32(255.0), dtype=f32) * wx0
    part += np.divide(planes[:, :, ix1], f32(255.0), dtype=f32) * wx1
    out = part[:, iy0, :] * wy0[:, None]
    out += part[:, iy1, :] * wy1[:, None]
    return out


def reference_preprocess(rgb: np.ndarray, net_w: int, net_h: int, mode: str = "letterbox", dtype=np.uint8) -> np.ndarray:
    """The canvas (float32 in [0, 1], or uint8 rint(x * 255)) built from :func:`reference_resize`."""
    lb = preprocess_params(rgb.shape[1], rgb.shape[0], net_w, net_h, mode)
    x = np.full((3, net_h, net_w), 0.5, f32)
    x[:, lb.dy : lb.dy + lb.new_h, lb.dx : lb.dx + lb.new_w] = reference_resize(rgb, lb.new_w, lb.new_h)
    if dtype == np.uint8:
        return np.rint(x * f32(255.0)).astype(np.uint8)
    return x


@pytest.fixture(scope="module")
def dog_rgb() -> np.ndarray:
    return np.load(DOG / "decoded_stb_rgb_uint8.npy")


@pytest.fixture(scope="module")
def dog_input() -> np.ndarray:
    return np.load(DOG / "input.npy")[0]


# --- Darknet reference tensors -------------------------------------------------------------------


def test_dog_letterbox_is_bit_exact(dog_rgb, dog_input):
    x, lb = letterbox(dog_rgb, 416, 416)
    assert x.dtype == np.float32 and x.shape == (3, 416, 416) and x.flags.c_contiguous
    assert np.array_equal(x, dog_input)
    assert lb == Letterbox(768, 576, 416, 416, 416, 312, 0, 52)


def test_dog_letterbox_uint8_within_one_level(dog_rgb, dog_input):
    q, lb = letterbox_uint8(dog_rgb, 416, 416)
    assert q.dtype == np.uint8 and q.shape == (3, 416, 416) and q.flags.c_contiguous
    assert lb.dy == 52
    diff = np.abs(q.astype(np.float32) / f32(255) - dog_input)
    assert diff.max() <= 1 / 255
    assert diff.max() <= 0.5 / 255 + 1e-6  # rint: half a level plus float32 rounding
    # Padding rows: rint(0.5 * 255) = rint(127.5) = 128 (half to even).
    assert (q[:, :52] == 128).all() and (q[:, 364:] == 128).all()
    assert np.array_equal(q, np.rint(dog_input * f32(255)).astype(np.uint8))


def test_dog_geometry():
    lb = letterbox_params(768, 576, 416, 416)
    assert (lb.new_w, lb.new_h, lb.dx, lb.dy) == (416, 312, 0, 52)
    assert lb.box_offset == (0.0, 52.0)
    portrait = letterbox_params(576, 768, 416, 416)
    assert (portrait.new_w, portrait.new_h, portrait.dx, portrait.dy) == (312, 416, 52, 0)


def test_letterbox_matches_loop_reference_on_dog_crop(dog_rgb):
    crop = dog_rgb[100:163, 200:290]  # 90x63: upscale on both axes
    x, _ = letterbox(crop, 128, 96)
    assert np.array_equal(x, ref_letterbox(crop, 128, 96))


def test_uint8_results_are_independent_arrays(dog_rgb):
    """Each letterbox_uint8 call returns a new array: a later call never changes an earlier result."""
    a, _ = letterbox_uint8(dog_rgb, 416, 416)
    a_copy = a.copy()
    b, _ = letterbox_uint8(dog_rgb[::-1].copy(), 416, 416)
    assert np.array_equal(a, a_copy)
    assert not np.array_equal(a, b)
    assert not np.shares_memory(a, b)


def test_letterbox_is_thread_safe(dog_rgb):
    expected, _ = letterbox(dog_rgb, 416, 416)
    small = dog_rgb[::3, ::2].copy()
    expected_small, _ = letterbox(small, 416, 416)
    failures: list[str] = []

    def work(i: int) -> None:
        for _ in range(10):
            img, exp = (dog_rgb, expected) if i % 2 else (small, expected_small)
            if not np.array_equal(letterbox(img, 416, 416)[0], exp):
                failures.append("float")
            if not np.array_equal(letterbox_uint8(img, 416, 416)[0], np.rint(exp * f32(255)).astype(np.uint8)):
                failures.append("uint8")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# --- degenerate sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "h", "expected"),
    [
        (1, 1, (416, 416, 0, 0)),
        (1, 3000, (1, 416, 207, 0)),  # new_w = 416 // 3000 = 0 -> clamped to 1
        (3000, 1, (416, 1, 0, 207)),
        (2, 1, (416, 208, 0, 104)),
        (1, 2, (208, 416, 104, 0)),
    ],
)
def test_degenerate_sizes(w, h, expected):
    rng = np.random.default_rng(w * 7919 + h)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, lb = letterbox(img, 416, 416)
    assert (lb.new_w, lb.new_h, lb.dx, lb.dy) == expected
    assert x.shape == (3, 416, 416)
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert np.array_equal(x, ref_letterbox(img, 416, 416))
    q, lb_q = letterbox_uint8(img, 416, 416)
    assert lb_q == lb and q.shape == (3, 416, 416)


def test_one_pixel_image_fills_the_canvas_with_its_colour():
    img = np.array([[[10, 200, 255]]], dtype=np.uint8)
    q, lb = letterbox_uint8(img, 416, 416)
    assert (lb.new_w, lb.new_h) == (416, 416)
    for c, v in enumerate((10, 200, 255)):
        assert (q[c] == v).all()


def test_single_row_output_copies_first_row_and_last_column():
    """new_h == 1 (Darknet: undefined) uses source row 0; new_w == 1 copies the last column."""
    img = np.zeros((4, 3000, 3), np.uint8)
    img[0] = 200
    x, lb = letterbox(img, 416, 416)
    assert lb.new_h == 1
    np.testing.assert_allclose(x[:, lb.dy, :], 200 / 255, atol=1e-6)  # row 0, not row 3 (zeros)
    img = np.zeros((3000, 4, 3), np.uint8)
    img[:, 3] = 77
    x, lb = letterbox(img, 416, 416)
    assert lb.new_w == 1
    np.testing.assert_allclose(x[:, :, lb.dx], 77 / 255, atol=1e-6)  # column 3, not column 0


def test_darknet_last_row_quirk_is_reproduced():
    """Darknet's last output row is (1-dy)*part[iy] with no dy*part[iy+1] term.

    For a 16-row source scaled to 416 rows, float32 15/415*415 = 14.999999 so iy = 14, dy ~ 1 and
    the last row is ~0 (nearly black) instead of the last source row. Bit-exactness keeps it.
    """
    img = np.full((16, 16, 3), 200, np.uint8)
    x, lb = letterbox(img, 416, 416)
    assert (lb.new_w, lb.new_h) == (416, 416)
    assert x[:, 415, :].max() < 1e-5
    np.testing.assert_allclose(x[:, :415, :], 200 / 255, atol=1e-6)
    assert np.array_equal(x, ref_letterbox(img, 416, 416))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
)
def test_letterbox_rejects_bad_arrays(bad):
    with pytest.raises(ValueError):
        letterbox(bad, 416, 416)


@pytest.mark.parametrize("args", [(0, 10, 416, 416), (10, 10, 0, 416), (10, -1, 416, 416), (10, 10, 416, 4.5)])
def test_params_reject_non_positive_sizes(args):
    with pytest.raises(ValueError):
        letterbox_params(*args)


# --- property tests against the loop reference ---------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 64),
    h=st.integers(1, 64),
    net_w=st.sampled_from([32, 64, 96, 128]),
    net_h=st.sampled_from([32, 64, 96, 128]),
    seed=st.integers(0, 2**32 - 1),
)
def test_letterbox_equals_loop_reference(w, h, net_w, net_h, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, lb = letterbox(img, net_w, net_h)
    assert x.shape == (3, net_h, net_w) and x.dtype == np.float32
    assert np.array_equal(x, ref_letterbox(img, net_w, net_h))
    assert x.min() >= 0 and x.max() <= 1
    q, lb_q = letterbox_uint8(img, net_w, net_h)
    assert lb_q == lb
    assert np.array_equal(q, np.rint(x * f32(255)).astype(np.uint8))


@settings(max_examples=60, deadline=None)
@given(
    w=st.integers(1, 40),
    h=st.integers(1, 40),
    net_w=st.integers(1, 50),
    net_h=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_letterbox_equals_loop_reference_any_net_size(w, h, net_w, net_h, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, _ = letterbox(img, net_w, net_h)
    assert np.array_equal(x, ref_letterbox(img, net_w, net_h))
    r, lb = preprocess_uint8(img, net_w, net_h, "resize")  # AlexeyAB resize_image to the net size
    assert (lb.new_w, lb.new_h, lb.dx, lb.dy) == (net_w, net_h, 0, 0)
    assert np.array_equal(r, ref_resize_uint8(img, net_w, net_h))


@settings(max_examples=300, deadline=None)
@given(
    src_w=st.integers(1, 20000),
    src_h=st.integers(1, 20000),
    net_w=st.integers(1, 2048),
    net_h=st.integers(1, 2048),
)
def test_params_invariants(src_w, src_h, net_w, net_h):
    lb = letterbox_params(src_w, src_h, net_w, net_h)
    assert 1 <= lb.new_w <= net_w and 1 <= lb.new_h <= net_h
    assert lb.dx >= 0 and lb.dy >= 0
    assert lb.dx + lb.new_w <= net_w and lb.dy + lb.new_h <= net_h
    assert lb.new_w == net_w or lb.new_h == net_h
    assert (lb.dx, lb.dy) == ((net_w - lb.new_w) // 2, (net_h - lb.new_h) // 2)
    assert (lb.src_w, lb.src_h, lb.net_w, lb.net_h) == (src_w, src_h, net_w, net_h)


# --- boxes ---------------------------------------------------------------------------------------


def test_unletterbox_dog_full_image_box():
    lb = letterbox_params(768, 576, 416, 416)
    net = np.array([[208.0, 208.0, 416.0, 312.0], [0.0, 52.0, 0.0, 0.0]])
    orig = unletterbox_boxes(net, lb)
    np.testing.assert_allclose(orig, [[384.0, 288.0, 768.0, 576.0], [0.0, 0.0, 0.0, 0.0]], atol=1e-9)


def test_unletterbox_uses_darknets_fractional_offset():
    """correct_yolo_boxes subtracts (net - new)/2. in floating point: 52.5 here, not dy = 52."""
    lb = letterbox_params(416, 311, 416, 416)
    assert (lb.new_h, lb.dy, lb.box_offset) == (311, 52, (0.0, 52.5))
    orig = unletterbox_boxes(np.array([[208.0, 52.5 + 155.5, 416.0, 311.0]]), lb)
    np.testing.assert_allclose(orig, [[208.0, 155.5, 416.0, 311.0]], atol=1e-9)


def test_unletterbox_formula_and_no_mutation():
    lb = letterbox_params(1024, 763, 416, 416)
    boxes = np.array([[100.0, 150.0, 40.0, 30.0], [300.5, 260.25, 120.0, 80.0]], dtype=np.float32)
    before = boxes.copy()
    out = unletterbox_boxes(boxes, lb)
    assert np.array_equal(boxes, before)
    assert out is not boxes and out.dtype == np.float64
    ox, oy = lb.box_offset
    b = boxes.astype(np.float64)
    expected = np.stack(
        [
            (b[:, 0] - ox) * lb.src_w / lb.new_w,
            (b[:, 1] - oy) * lb.src_h / lb.new_h,
            b[:, 2] * lb.src_w / lb.new_w,
            b[:, 3] * lb.src_h / lb.new_h,
        ],
        axis=1,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    src_w=st.integers(1, 5000),
    src_h=st.integers(1, 5000),
    net=st.sampled_from([(416, 416), (608, 608), (320, 256)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_box_round_trip(src_w, src_h, net, seed):
    lb = letterbox_params(src_w, src_h, *net)
    rng = np.random.default_rng(seed)
    boxes = np.column_stack(
        [rng.uniform(-50, net[0] + 50, 7), rng.uniform(-50, net[1] + 50, 7), rng.uniform(0, net[0], 7), rng.uniform(0, net[1], 7)]
    )
    back = letterbox_boxes(unletterbox_boxes(boxes, lb), lb)
    np.testing.assert_allclose(back, boxes, rtol=1e-9, atol=1e-7)
    orig = np.column_stack(
        [rng.uniform(0, src_w, 5), rng.uniform(0, src_h, 5), rng.uniform(0, src_w, 5), rng.uniform(0, src_h, 5)]
    )
    np.testing.assert_allclose(unletterbox_boxes(letterbox_boxes(orig, lb), lb), orig, rtol=1e-9, atol=1e-7)


def test_boxes_shape_validation_and_empty():
    lb = letterbox_params(10, 10, 32, 32)
    assert unletterbox_boxes(np.zeros((0, 4)), lb).shape == (0, 4)
    with pytest.raises(ValueError):
        unletterbox_boxes(np.zeros((3,)), lb)
    with pytest.raises(ValueError):
        letterbox_boxes(np.zeros((2, 5)), lb)


def test_clip_boxes():
    boxes = np.array(
        [
            [50.0, 40.0, 20.0, 10.0],  # inside: unchanged
            [-5.0, 10.0, 30.0, 10.0],  # x extent [-20, 10] -> [0, 10]
            [95.0, 75.0, 20.0, 20.0],  # extent [85,105]x[65,85] -> [85,100]x[65,80]
            [-50.0, -50.0, 10.0, 10.0],  # fully outside -> zero size at the corner
        ]
    )
    before = boxes.copy()
    out = clip_boxes_cxcywh(boxes, 100, 80)
    assert np.array_equal(boxes, before)
    np.testing.assert_allclose(
        out,
        [[50.0, 40.0, 20.0, 10.0], [5.0, 10.0, 10.0, 10.0], [92.5, 72.5, 15.0, 15.0], [0.0, 0.0, 0.0, 0.0]],
    )


# --- resize mode (AlexeyAB resize_image) and preprocess_uint8 ----------------------------------


def test_resize_params_geometry_and_darknet_letter0_boxes():
    lb = resize_params(768, 576, 416, 416)
    assert lb == Letterbox(768, 576, 416, 416, 416, 416, 0, 0)
    assert lb.box_offset == (0.0, 0.0)
    # AlexeyAB correct_yolo_boxes(letter=0): new = net, so x = x/netw * w, w = w/netw * w (per axis).
    net = np.array([[208.0, 208.0, 416.0, 416.0], [100.0, 300.0, 40.0, 52.0]])
    expected = net * [768 / 416, 576 / 416, 768 / 416, 576 / 416]
    np.testing.assert_allclose(unletterbox_boxes(net, lb), expected, rtol=1e-12)
    with pytest.raises(ValueError):
        resize_params(0, 10, 416, 416)


def test_preprocess_modes_and_validation(dog_rgb):
    assert PREPROCESS_MODES == ("letterbox", "resize")
    assert preprocess_params(768, 576, 416, 416, "letterbox") == letterbox_params(768, 576, 416, 416)
    assert preprocess_params(768, 576, 416, 416, "resize") == resize_params(768, 576, 416, 416)
    for bad_mode in ("stretch", "", None):
        with pytest.raises(ValueError):
            preprocess_uint8(dog_rgb, 416, 416, bad_mode)
    for bad_out in (
        np.empty((3, 416, 416), np.float32),
        np.empty((3, 416, 415), np.uint8),
        np.empty((3, 416, 832), np.uint8)[:, :, ::2],
        np.empty((416, 416, 3), np.uint8),
    ):
        with pytest.raises(ValueError):
            preprocess_uint8(dog_rgb, 416, 416, out=bad_out)


def test_preprocess_letterbox_equals_darknet_and_writes_into_a_batch_slot(dog_rgb, dog_input):
    batch = np.full((3, 3, 416, 416), 7, np.uint8)
    x, lb = preprocess_uint8(dog_rgb, 416, 416, "letterbox", out=batch[1])
    assert x is batch[1] or np.shares_memory(x, batch[1])
    assert lb == letterbox_params(768, 576, 416, 416)
    assert np.array_equal(batch[1], np.rint(dog_input * f32(255)).astype(np.uint8))
    assert (batch[0] == 7).all() and (batch[2] == 7).all()


def test_preprocess_resize_matches_darknet_resize_image_on_dog(dog_rgb):
    x, lb = preprocess_uint8(dog_rgb, 416, 416, "resize")
    assert lb == resize_params(768, 576, 416, 416)
    assert x.shape == (3, 416, 416) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert np.array_equal(x, ref_resize_uint8(dog_rgb, 416, 416))


def test_resize_to_the_same_size_is_a_copy():
    """AlexeyAB resize_image returns copy_image(im) when the size already matches."""
    img = np.random.default_rng(5).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x, _ = preprocess_uint8(img, 53, 37, "resize")
    assert np.array_equal(x, img.transpose(2, 0, 1))



# --- the C kernel against the vectorised reference (bit for bit, uint8 and float32) ----------------


def _views(img: np.ndarray, flip_rows: bool, flip_cols: bool, transpose: bool, rgbx: bool) -> np.ndarray:
    """``img`` as a strided view: inside an RGBX buffer, flipped and/or transposed (EXIF-style)."""
    if rgbx:
        buf = np.full(img.shape[:2] + (4,), 255, np.uint8)
        buf[..., :3] = img
        img = buf[..., :3]
    if flip_rows:
        img = img[::-1]
    if flip_cols:
        img = img[:, ::-1]
    if transpose:
        img = img.transpose(1, 0, 2)
    return img


def test_kernel_is_loaded():
    assert geometry.native_kernel_error() is None


def test_preprocess_defaults_to_float32_and_out_dtype_wins(dog_rgb, dog_input):
    x, _ = preprocess(dog_rgb, 416, 416)
    assert x.dtype == np.float32 and np.array_equal(x, dog_input)
    batch = np.zeros((2, 3, 416, 416), np.float32)
    _, lb = preprocess(dog_rgb, 416, 416, "letterbox", out=batch[0], dtype=np.uint8)
    assert lb.dy == 52 and np.array_equal(batch[0], dog_input) and not batch[1].any()


def test_dog_kernel_equals_reference_both_modes_and_dtypes(dog_rgb):
    for mode in PREPROCESS_MODES:
        for dtype in (np.uint8, np.float32):
            x, _ = preprocess(dog_rgb, 416, 416, mode, dtype=dtype)
            assert x.dtype == dtype
            assert np.array_equal(x, reference_preprocess(dog_rgb, 416, 416, mode, dtype)), (mode, dtype)


@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(1, 700),
    h=st.integers(1, 700),
    net_w=st.integers(1, 640),
    net_h=st.integers(1, 640),
    mode=st.sampled_from(PREPROCESS_MODES),
    view=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_equals_reference_on_random_images_sizes_and_strides(w, h, net_w, net_h, mode, view, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    src = _views(img, *view)
    dense = np.ascontiguousarray(src)
    expected = reference_preprocess(dense, net_w, net_h, mode, np.uint8)
    batch = np.zeros((2, 3, net_h, net_w), np.uint8)
    x, lb = preprocess_uint8(src, net_w, net_h, mode, out=batch[1])
    assert np.array_equal(batch[1], expected)
    assert not batch[0].any()
    assert lb == preprocess_params(dense.shape[1], dense.shape[0], net_w, net_h, mode)
    xf, _ = preprocess(src, net_w, net_h, mode, dtype=np.float32)
    assert np.array_equal(xf, reference_preprocess(dense, net_w, net_h, mode, np.float32))


def test_kernel_equals_reference_on_every_test_image():
    from transformer.imaging import decode_image

    for path in sorted((DATA / "images").glob("*.jpg")):
        rgb = decode_image(path.read_bytes())
        for mode in PREPROCESS_MODES:
            for net in ((416, 416), (608, 608), (320, 256)):
                x, _ = preprocess_uint8(rgb, *net, mode)
                assert np.array_equal(x, reference_preprocess(rgb, *net, mode)), (path.name, mode, net)


def test_preprocess_rejects_bad_dtype_and_readonly_out(dog_rgb):
    with pytest.raises(ValueError):
        preprocess(dog_rgb, 416, 416, dtype=np.float64)
    ro = np.empty((3, 416, 416), np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        preprocess(dog_rgb, 416, 416, out=ro)
    with pytest.raises(ValueError):
        preprocess_uint8(dog_rgb, 416, 416, out=np.empty((3, 416, 416), np.float32))


def test_without_the_kernel_pixels_fail_clearly_and_boxes_still_work(monkeypatch, dog_rgb):
    monkeypatch.setattr(geometry, "_letterbox", None)
    monkeypatch.setattr(geometry, "_KERNEL_ERROR", "not built (test)")
    assert geometry.native_kernel_error() == "not built (test)"
    with pytest.raises(RuntimeError, match="not built"):
        letterbox_uint8(dog_rgb, 416, 416)
    lb = letterbox_params(768, 576, 416, 416)
    assert unletterbox_boxes(np.array([[208.0, 208.0, 416.0, 312.0]]), lb).shape == (1, 4)
