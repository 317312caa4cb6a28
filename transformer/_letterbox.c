/*
 * transformer._letterbox: Darknet's resize_image + letterbox canvas in C, bit-exact.
 *
 * One function, resize_into(src, dst, dx, dy, new_w, new_h): the bilinear of pjreddie/AlexeyAB
 * src/image.c resize_image applied to src / 255 (an (H, W, 3) uint8 buffer with any strides,
 * negative ones included) and written into dst[:, dy:dy+new_h, dx:dx+new_w] of a C-contiguous
 * [3, net_h, net_w] float32 (values in [0, 1]) or uint8 (rint(value * 255), half to even) buffer;
 * the rest of dst is set to the padding (0.5, or 128 = rint(127.5)).
 *
 * Exactness (the quirks are listed in transformer/geometry.py; the numpy reference the tests
 * compare against is in tests/unit/test_geometry.py): every operation is done in float32, in
 * Darknet's order: scale = (float)(in-1) / (float)(out-1),
 * pos = (float)i * scale, i0 = (int)pos, frac = pos - (float)i0, w0 = 1 - frac, w1 = frac;
 * horizontal part = w0 * (v0/255) + w1 * (v1/255), vertical out = w0 * part[i0] + w1 * part[i1],
 * each product rounded before the sum (no fused multiply-add: built with -ffp-contract=off, and the
 * build fails under -ffast-math or with excess float precision).
 *
 * Only the source rows the vertical pass reads go through the horizontal pass, each once, into a
 * two-row ring (rows are read in non-decreasing order). The GIL is released while computing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <stdint.h>
#include <string.h>

#if defined(__FAST_MATH__)
#error "transformer._letterbox must not be built with -ffast-math (bit-exact float32 required)"
#endif
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "transformer._letterbox needs float arithmetic evaluated in float32 (FLT_EVAL_METHOD == 0)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef struct {
    Py_ssize_t i0, i1; /* source sample indices */
    float w0, w1;      /* weights; w1 == 0 where Darknet skips the second term */
} Tap;

/* One pass of resize_image along an axis (numpy twin: _axis_taps_reference in tests/unit/test_geometry.py). */
static void axis_taps(Py_ssize_t n_src, Py_ssize_t n_dst, int last_copies, Tap *t)
{
    const float scale = n_dst == 1 ? 0.0f : (float)(n_src - 1) / (float)(n_dst - 1);
    for (Py_ssize_t i = 0; i < n_dst; i++) {
        const float pos = (float)i * scale;
        Py_ssize_t i0 = (Py_ssize_t)pos; /* pos >= 0: truncation == floor */
        const float frac = pos - (float)i0;
        if (i0 > n_src - 1)
            i0 = n_src - 1;
        t[i].i0 = i0;
        t[i].i1 = i0 + 1 < n_src ? i0 + 1 : n_src - 1;
        t[i].w0 = 1.0f - frac;
        t[i].w1 = frac;
    }
    const Py_ssize_t from = n_src == 1 ? 0 : n_dst - 1;
    for (Py_ssize_t i = from; i < n_dst; i++) {
        if (last_copies) { /* horizontal: `if (c == w-1 || im.w == 1) val = src[im.w-1]` */
            t[i].i0 = t[i].i1 = n_src - 1;
            t[i].w0 = 1.0f;
        } else { /* vertical: `if (r == h-1 || im.h == 1) continue;` after (1-dy)*part[iy] */
            t[i].i1 = t[i].i0;
        }
        t[i].w1 = 0.0f;
    }
}

typedef struct {
    const uint8_t *base;             /* element [0, 0, 0] */
    Py_ssize_t rs, cs, ks;           /* byte strides: row, column, channel */
    Py_ssize_t new_w;
    const Tap *tx;
    float lut[256];                  /* v / 255 in float32 */
} HPass;

/* part[k * new_w + x] = horizontal pass of source row r, channel k. The taps hold byte offsets
 * (index * column stride); channels 1 apart (interleaved RGB/RGBX) get their own loop so the
 * compiler sees constant channel offsets. */
static void horizontal(const HPass *h, Py_ssize_t r, float *part)
{
    const uint8_t *row = h->base + r * h->rs;
    const Py_ssize_t n = h->new_w, ks = h->ks;
    const float *lut = h->lut;
    float *p0 = part, *p1 = part + n, *p2 = part + 2 * n;
    if (ks == 1) {
        for (Py_ssize_t x = 0; x < n; x++) {
            const Tap t = h->tx[x];
            const uint8_t *a = row + t.i0, *b = row + t.i1;
            const float a0 = t.w0 * lut[a[0]], b0 = t.w1 * lut[b[0]];
            const float a1 = t.w0 * lut[a[1]], b1 = t.w1 * lut[b[1]];
            const float a2 = t.w0 * lut[a[2]], b2 = t.w1 * lut[b[2]];
            p0[x] = a0 + b0;
            p1[x] = a1 + b1;
            p2[x] = a2 + b2;
        }
        return;
    }
    for (Py_ssize_t x = 0; x < n; x++) {
        const Tap t = h->tx[x];
        const uint8_t *a = row + t.i0, *b = row + t.i1;
        const float a0 = t.w0 * lut[a[0]], b0 = t.w1 * lut[b[0]];
        const float a1 = t.w0 * lut[a[ks]], b1 = t.w1 * lut[b[ks]];
        const float a2 = t.w0 * lut[a[2 * ks]], b2 = t.w1 * lut[b[2 * ks]];
        p0[x] = a0 + b0;
        p1[x] = a1 + b1;
        p2[x] = a2 + b2;
    }
}

static void vertical_f32(const float *restrict a, const float *restrict b, float w0, float w1, float *restrict out,
                         Py_ssize_t n)
{
    for (Py_ssize_t x = 0; x < n; x++) {
        const float u = w0 * a[x];
        const float v = w1 * b[x];
        out[x] = u + v;
    }
}

static void vertical_u8(const float *restrict a, const float *restrict b, float w0, float w1, uint8_t *restrict out,
                        Py_ssize_t n)
{
    /* rint(y * 255) for y in [0, ~1]: adding 1.5 * 2^23 rounds to an integer, half to even, in float32. */
    const float magic = 12582912.0f;
    for (Py_ssize_t x = 0; x < n; x++) {
        const float u = w0 * a[x];
        const float v = w1 * b[x];
        const float y = (u + v) * 255.0f;
        out[x] = (uint8_t)(int32_t)((y + magic) - magic);
    }
}

typedef struct {
    float *buf[2];
    Py_ssize_t row[2];
} Ring;

/* The part row of source row r, computed into the slot not holding row `keep` if not cached. */
static const float *ring_get(Ring *ring, const HPass *h, Py_ssize_t r, Py_ssize_t keep)
{
    for (int s = 0; s < 2; s++)
        if (ring->row[s] == r)
            return ring->buf[s];
    int s = ring->row[0] == keep ? 1 : ring->row[1] == keep ? 0 : (ring->row[0] < ring->row[1] ? 0 : 1);
    horizontal(h, r, ring->buf[s]);
    ring->row[s] = r;
    return ring->buf[s];
}

static int check_dst(Py_buffer *d, int *is_u8)
{
    if (d->ndim != 3 || d->shape[0] != 3 || d->shape[1] < 1 || d->shape[2] < 1 ||
        !PyBuffer_IsContiguous(d, 'C')) {
        PyErr_SetString(PyExc_ValueError, "dst must be a C-contiguous (3, net_h, net_w) buffer");
        return -1;
    }
    const char *f = d->format ? d->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (d->itemsize == 1 && (strcmp(f, "B") == 0)) {
        *is_u8 = 1;
    } else if (d->itemsize == 4 && strcmp(f, "f") == 0) {
        *is_u8 = 0;
    } else {
        PyErr_SetString(PyExc_ValueError, "dst must be uint8 or float32");
        return -1;
    }
    return 0;
}

static PyObject *resize_into(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *src_obj, *dst_obj;
    Py_ssize_t dx, dy, new_w, new_h;
    if (!PyArg_ParseTuple(args, "OOnnnn:resize_into", &src_obj, &dst_obj, &dx, &dy, &new_w, &new_h))
        return NULL;

    Py_buffer s, d;
    if (PyObject_GetBuffer(src_obj, &s, PyBUF_RECORDS_RO) < 0)
        return NULL;
    if (PyObject_GetBuffer(dst_obj, &d, PyBUF_RECORDS) < 0) {
        PyBuffer_Release(&s);
        return NULL;
    }
    PyObject *result = NULL;
    Tap *taps = NULL;
    float *rows = NULL;
    int is_u8 = 0;
    const char *sf = s.format ? s.format : "B";
    if (s.ndim != 3 || s.itemsize != 1 || (strcmp(sf, "B") != 0 && strcmp(sf, "=B") != 0 && strcmp(sf, "@B") != 0) ||
        s.shape[2] != 3 || s.shape[0] < 1 || s.shape[1] < 1) {
        PyErr_SetString(PyExc_ValueError, "src must be a non-empty (H, W, 3) uint8 buffer");
        goto done;
    }
    if (check_dst(&d, &is_u8) < 0)
        goto done;
    const Py_ssize_t src_h = s.shape[0], src_w = s.shape[1];
    const Py_ssize_t net_h = d.shape[1], net_w = d.shape[2];
    if (new_w < 1 || new_h < 1 || dx < 0 || dy < 0 || dx > net_w - new_w || dy > net_h - new_h) {
        PyErr_SetString(PyExc_ValueError, "the resized image must lie inside dst");
        goto done;
    }
    if (new_w > PY_SSIZE_T_MAX / 3 / (Py_ssize_t)sizeof(float) / 2 ||
        new_w + new_h > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(Tap)) {
        PyErr_NoMemory();
        goto done;
    }
    taps = PyMem_RawMalloc((size_t)(new_w + new_h) * sizeof(Tap));
    rows = PyMem_RawMalloc((size_t)new_w * 3 * 2 * sizeof(float));
    if (taps == NULL || rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    Py_BEGIN_ALLOW_THREADS
    HPass h;
    h.base = (const uint8_t *)s.buf;
    h.rs = s.strides[0];
    h.cs = s.strides[1];
    h.ks = s.strides[2];
    h.new_w = new_w;
    h.tx = taps;
    for (int v = 0; v < 256; v++)
        h.lut[v] = (float)v / 255.0f;
    Tap *ty = taps + new_w;
    axis_taps(src_w, new_w, 1, taps);
    for (Py_ssize_t x = 0; x < new_w; x++) { /* column indices -> byte offsets */
        taps[x].i0 *= h.cs;
        taps[x].i1 *= h.cs;
    }
    axis_taps(src_h, new_h, 0, ty);
    Ring ring = {{rows, rows + 3 * new_w}, {-1, -1}};
    const Py_ssize_t plane = net_h * net_w;

    for (int k = 0; k < 3; k++) { /* padding: rows above/below, then columns left/right */
        if (is_u8) {
            uint8_t *p = (uint8_t *)d.buf + k * plane;
            memset(p, 128, (size_t)(dy * net_w));
            memset(p + (dy + new_h) * net_w, 128, (size_t)((net_h - dy - new_h) * net_w));
            for (Py_ssize_t r = dy; r < dy + new_h; r++) {
                memset(p + r * net_w, 128, (size_t)dx);
                memset(p + r * net_w + dx + new_w, 128, (size_t)(net_w - dx - new_w));
            }
        } else {
            float *p = (float *)d.buf + k * plane;
            for (Py_ssize_t i = 0; i < dy * net_w; i++)
                p[i] = 0.5f;
            for (Py_ssize_t i = (dy + new_h) * net_w; i < plane; i++)
                p[i] = 0.5f;
            for (Py_ssize_t r = dy; r < dy + new_h; r++) {
                for (Py_ssize_t x = 0; x < dx; x++)
                    p[r * net_w + x] = 0.5f;
                for (Py_ssize_t x = dx + new_w; x < net_w; x++)
                    p[r * net_w + x] = 0.5f;
            }
        }
    }
    for (Py_ssize_t r = 0; r < new_h; r++) {
        const Tap t = ty[r];
        const float *a = ring_get(&ring, &h, t.i0, t.i1);
        const float *b = t.i1 == t.i0 ? a : ring_get(&ring, &h, t.i1, t.i0);
        const Py_ssize_t off = (dy + r) * net_w + dx;
        for (int k = 0; k < 3; k++) {
            if (is_u8)
                vertical_u8(a + k * new_w, b + k * new_w, t.w0, t.w1, (uint8_t *)d.buf + k * plane + off, new_w);
            else
                vertical_f32(a + k * new_w, b + k * new_w, t.w0, t.w1, (float *)d.buf + k * plane + off, new_w);
        }
    }
    Py_END_ALLOW_THREADS

    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_RawFree(taps);
    PyMem_RawFree(rows);
    PyBuffer_Release(&d);
    PyBuffer_Release(&s);
    return result;
}

static PyMethodDef methods[] = {
    {"resize_into", resize_into, METH_VARARGS,
     "resize_into(src, dst, dx, dy, new_w, new_h)\n--\n\n"
     "Darknet resize_image of src / 255 ((H, W, 3) uint8, any strides) written into\n"
     "dst[:, dy:dy+new_h, dx:dx+new_w] of a C-contiguous (3, net_h, net_w) float32 or uint8\n"
     "(rint(x * 255)) buffer; the rest of dst becomes the padding (0.5 or 128)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "transformer._letterbox",
    "Darknet-exact bilinear resize and letterbox canvas (see transformer.geometry).", -1, methods,
};

PyMODINIT_FUNC PyInit__letterbox(void)
{
    return PyModule_Create(&module);
}
