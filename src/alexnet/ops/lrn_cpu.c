/* Local response normalization (§3.3) on the CPU, one pass per image: lrn.py's formula, for
 * float32 tensors laid out as (images, C, HW) (contiguous: the _nchw kernels) or (images, HW, C)
 * (channels_last: the _nhwc kernels). lrn_native.py compiles this file on first use and calls
 * it from a few threads, each on its own images.
 *
 *   s[c] = k + alpha * sum of x[j]^2 over the `size` channels j centred on c (cut at the ends)
 *   y[c] = x[c] * s[c]^-beta
 *   dx[c] = dy[c] * s[c]^-beta - 2 alpha beta x[c] * sum over the same j of dy[j] x[j] s[j]^-(beta+1)
 *
 * In (C, HW) order each channel's row of pixels is summed from the few rows around it; in
 * (HW, C) order each pixel's channels from the same channels shifted. Either way the rows stay
 * in the cache and every output is written once: no intermediate tensors, no passes over memory
 * between steps. The inner loops are plain enough for the compiler to vectorise.
 */
#include <math.h>
#include <stdlib.h>

static inline float inverse_power(float s, float beta) {
    /* s^-beta; for the paper's beta = 0.75 as 1 / sqrt(s * sqrt(s)), cheaper than powf */
    return beta == 0.75f ? 1.0f / sqrtf(s * sqrtf(s)) : powf(s, -beta);
}

static void window(long c, long channels, int size, long *first, long *last) {
    *first = c - size / 2 < 0 ? 0 : c - size / 2;
    *last = c + (size - 1) / 2 >= channels ? channels - 1 : c + (size - 1) / 2;
}

/* (C, HW) order. Each kernel returns 0, or -1 if its scratch memory could not be allocated. */
int lrn_forward_nchw(const float *x, float *y, float *s, long images, long channels, long pixels,
                     int size, float alpha, float beta, float k) {
    for (long image = 0; image < images; image++) {
        const float *xi = x + image * channels * pixels;
        float *yi = y + image * channels * pixels, *si = s + image * channels * pixels;
        for (long c = 0; c < channels; c++) {
            long first, last;
            window(c, channels, size, &first, &last);
            float *sc = si + c * pixels, *yc = yi + c * pixels;
            const float *xc = xi + c * pixels;
            for (long p = 0; p < pixels; p++) sc[p] = 0.0f;
            for (long j = first; j <= last; j++) {
                const float *xj = xi + j * pixels;
                for (long p = 0; p < pixels; p++) sc[p] += xj[p] * xj[p];
            }
            for (long p = 0; p < pixels; p++) {
                sc[p] = k + alpha * sc[p];
                yc[p] = xc[p] * inverse_power(sc[p], beta);
            }
        }
    }
    return 0;
}

int lrn_backward_nchw(const float *dy, const float *x, const float *s, float *dx, long images,
                      long channels, long pixels, int size, float alpha, float beta) {
    float *through = malloc(sizeof(float) * channels * pixels); /* dy x s^-(beta+1), one image */
    if (through == NULL) return -1;
    for (long image = 0; image < images; image++) {
        long offset = image * channels * pixels;
        const float *dyi = dy + offset, *xi = x + offset, *si = s + offset;
        float *dxi = dx + offset;
        for (long q = 0; q < channels * pixels; q++)
            through[q] = dyi[q] * xi[q] * inverse_power(si[q], beta) / si[q];
        for (long c = 0; c < channels; c++) {
            long first, last;
            window(c, channels, size, &first, &last);
            float *dxc = dxi + c * pixels;
            for (long p = 0; p < pixels; p++) dxc[p] = 0.0f;
            for (long j = first; j <= last; j++) {
                const float *tj = through + j * pixels;
                for (long p = 0; p < pixels; p++) dxc[p] += tj[p];
            }
            const float *dyc = dyi + c * pixels, *xc = xi + c * pixels, *sc = si + c * pixels;
            for (long p = 0; p < pixels; p++)
                dxc[p] = dyc[p] * inverse_power(sc[p], beta) - 2.0f * alpha * beta * xc[p] * dxc[p];
        }
    }
    free(through);
    return 0;
}

/* (HW, C) order: each pixel's channels in turn. */
static void shifted_sums(const float *row, float *sums, long channels, int size) {
    /* sums[c] = the sum of row[j] over channel c's window */
    for (long c = 0; c < channels; c++) sums[c] = 0.0f;
    for (long shift = -(size / 2); shift <= (size - 1) / 2; shift++) {
        long first = shift < 0 ? -shift : 0, end = shift > 0 ? channels - shift : channels;
        for (long c = first; c < end; c++) sums[c] += row[c + shift];
    }
}

int lrn_forward_nhwc(const float *x, float *y, float *s, long images, long channels, long pixels,
                     int size, float alpha, float beta, float k) {
    float *squares = malloc(sizeof(float) * channels);
    if (squares == NULL) return -1;
    for (long at = 0; at < images * pixels * channels; at += channels) {
        const float *xp = x + at;
        float *yp = y + at, *sp = s + at;
        for (long c = 0; c < channels; c++) squares[c] = xp[c] * xp[c];
        shifted_sums(squares, sp, channels, size);
        for (long c = 0; c < channels; c++) {
            sp[c] = k + alpha * sp[c];
            yp[c] = xp[c] * inverse_power(sp[c], beta);
        }
    }
    free(squares);
    return 0;
}

int lrn_backward_nhwc(const float *dy, const float *x, const float *s, float *dx, long images,
                      long channels, long pixels, int size, float alpha, float beta) {
    float *scratch = malloc(sizeof(float) * 2 * channels);
    if (scratch == NULL) return -1;
    float *scale = scratch, *through = scratch + channels; /* s^-beta; dy x s^-(beta+1) */
    for (long at = 0; at < images * pixels * channels; at += channels) {
        const float *dyp = dy + at, *xp = x + at, *sp = s + at;
        float *dxp = dx + at;
        for (long c = 0; c < channels; c++) {
            scale[c] = inverse_power(sp[c], beta);
            through[c] = dyp[c] * xp[c] * scale[c] / sp[c];
        }
        shifted_sums(through, dxp, channels, size);
        for (long c = 0; c < channels; c++)
            dxp[c] = dyp[c] * scale[c] - 2.0f * alpha * beta * xp[c] * dxp[c];
    }
    free(scratch);
    return 0;
}
