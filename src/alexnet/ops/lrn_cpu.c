/* Local response normalization (§3.3) on the CPU: lrn.py's torch operations, in their order of
 * rounding, for float32 tensors laid out as (images, C, HW) (contiguous: the _nchw kernels) or
 * (images, HW, C) (channels_last: the _nhwc kernels), and the paper's beta = 0.75. native.py
 * builds it with -ffp-contract=off, so each product and sum is rounded on its own, as torch's
 * elementwise operations round them: the bits are those of the torch operations on any CPU.
 *
 *   s = (window_sum(x * x) * alpha) + k,          y = inv(s) * x
 *   t = ((dy * x) * inv(s)) / s,                  dx = (inv(s) * dy) + ((window_sum(t) * x) * coef)
 *
 * with inv(s) = rsqrt(s) / rsqrt(rsqrt(s)) = s^-0.75, rsqrt(v) = 1 / sqrt(v), coef = -2 alpha beta.
 * window_sum is lrn.py's _window_sum: over the channels zero-padded by size/2 at each end, sums
 * of 1, 2, 4, ... adjacent channels, each from the one before in one add (run[i] + run[i +
 * width]), the parts named by the binary digits of `size` added in turn.
 *
 * In (C, HW) order the pixels are taken in tiles, so that a tile's padded channels stay in the
 * cache through the sums; in (HW, C) order one pixel's channels at a time. Every kernel returns
 * 0, or -1 if its scratch memory could not be allocated.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 256 /* pixels per tile in (C, HW) order */

static inline float inverse_power(float s) {
    float root = 1.0f / sqrtf(s); /* s^-1/2, as torch's rsqrt rounds it */
    return root / (1.0f / sqrtf(root));
}

/* out[c * out_stride + p] (c < channels, p < count) = the window sums of the padded rows in
 * `run` (channels + 2 * (size / 2) rows of `stride` floats; overwritten). */
static void window_sum(float *run, long stride, float *out, long out_stride, long channels,
                       int size, long count) {
    long rows = channels + 2 * (size / 2), offset = 0;
    int first = 1;
    for (long width = 1;; width *= 2) {
        if (size & width) {
            for (long c = 0; c < channels; c++) {
                const float *part = run + (c + offset) * stride;
                float *total = out + c * out_stride;
                if (first)
                    memcpy(total, part, count * sizeof(float));
                else
                    for (long p = 0; p < count; p++) total[p] += part[p];
            }
            first = 0;
            offset += width;
        }
        if (2 * width > size) break;
        rows -= width;
        for (long i = 0; i < rows; i++) {
            float *a = run + i * stride;
            const float *b = run + (i + width) * stride;
            for (long p = 0; p < count; p++) a[p] += b[p];
        }
    }
}

/* The same sums along one row of channels: out[c] from run (channels + 2 * (size / 2) floats,
 * overwritten), each step one loop over the channels. */
static void window_sum_row(float *run, float *out, long channels, int size) {
    long length = channels + 2 * (size / 2), offset = 0;
    int first = 1;
    for (long width = 1;; width *= 2) {
        if (size & width) {
            if (first)
                memcpy(out, run + offset, channels * sizeof(float));
            else
                for (long c = 0; c < channels; c++) out[c] += run[offset + c];
            first = 0;
            offset += width;
        }
        if (2 * width > size) break;
        length -= width;
        for (long i = 0; i < length; i++) run[i] += run[i + width];
    }
}

/* Zero the padding rows of `run` and return its first channel row. */
static float *padded_middle(float *run, long channels, int size, long stride) {
    long half = size / 2;
    memset(run, 0, half * stride * sizeof(float));
    memset(run + (half + channels) * stride, 0, half * stride * sizeof(float));
    return run + half * stride;
}

int lrn_forward_nchw(const float *x, float *y, float *s, long images, long channels, long pixels,
                     int size, float alpha, float k) {
    float *run = malloc(sizeof(float) * (channels + 2 * (size / 2)) * TILE);
    if (run == NULL) return -1;
    for (long at = 0; at < images * channels * pixels; at += channels * pixels) {
        for (long tile = 0; tile < pixels; tile += TILE) {
            long count = pixels - tile < TILE ? pixels - tile : TILE, first = at + tile;
            float *middle = padded_middle(run, channels, size, TILE);
            for (long c = 0; c < channels; c++) {
                const float *xc = x + first + c * pixels;
                for (long p = 0; p < count; p++) middle[c * TILE + p] = xc[p] * xc[p];
            }
            window_sum(run, TILE, s + first, pixels, channels, size, count);
            for (long c = 0; c < channels; c++) {
                const float *xc = x + first + c * pixels;
                float *sc = s + first + c * pixels, *yc = y + first + c * pixels;
                for (long p = 0; p < count; p++) {
                    sc[p] = sc[p] * alpha + k;
                    yc[p] = inverse_power(sc[p]) * xc[p];
                }
            }
        }
    }
    free(run);
    return 0;
}

int lrn_backward_nchw(const float *dy, const float *x, const float *s, float *dx, long images,
                      long channels, long pixels, int size, float coef) {
    float *run = malloc(sizeof(float) * (channels + 2 * (size / 2)) * TILE);
    if (run == NULL) return -1;
    for (long at = 0; at < images * channels * pixels; at += channels * pixels) {
        for (long tile = 0; tile < pixels; tile += TILE) {
            long count = pixels - tile < TILE ? pixels - tile : TILE, first = at + tile;
            float *middle = padded_middle(run, channels, size, TILE);
            for (long c = 0; c < channels; c++) {
                long row = first + c * pixels;
                for (long p = 0; p < count; p++)
                    middle[c * TILE + p] =
                        dy[row + p] * x[row + p] * inverse_power(s[row + p]) / s[row + p];
            }
            window_sum(run, TILE, dx + first, pixels, channels, size, count);
            for (long c = 0; c < channels; c++) {
                long row = first + c * pixels;
                for (long p = 0; p < count; p++)
                    dx[row + p] = inverse_power(s[row + p]) * dy[row + p] +
                                  dx[row + p] * x[row + p] * coef;
            }
        }
    }
    free(run);
    return 0;
}

int lrn_forward_nhwc(const float *x, float *y, float *s, long images, long channels, long pixels,
                     int size, float alpha, float k) {
    float *run = malloc(sizeof(float) * (channels + 2 * (size / 2)));
    if (run == NULL) return -1;
    for (long at = 0; at < images * pixels * channels; at += channels) {
        const float *xp = x + at;
        float *yp = y + at, *sp = s + at, *middle = padded_middle(run, channels, size, 1);
        for (long c = 0; c < channels; c++) middle[c] = xp[c] * xp[c];
        window_sum_row(run, sp, channels, size);
        for (long c = 0; c < channels; c++) {
            sp[c] = sp[c] * alpha + k;
            yp[c] = inverse_power(sp[c]) * xp[c];
        }
    }
    free(run);
    return 0;
}

int lrn_backward_nhwc(const float *dy, const float *x, const float *s, float *dx, long images,
                      long channels, long pixels, int size, float coef) {
    float *run = malloc(sizeof(float) * (channels + 2 * (size / 2)));
    if (run == NULL) return -1;
    for (long at = 0; at < images * pixels * channels; at += channels) {
        const float *dyp = dy + at, *xp = x + at, *sp = s + at;
        float *dxp = dx + at, *middle = padded_middle(run, channels, size, 1);
        for (long c = 0; c < channels; c++)
            middle[c] = dyp[c] * xp[c] * inverse_power(sp[c]) / sp[c];
        window_sum_row(run, dxp, channels, size);
        for (long c = 0; c < channels; c++)
            dxp[c] = inverse_power(sp[c]) * dyp[c] + dxp[c] * xp[c] * coef;
    }
    free(run);
    return 0;
}
