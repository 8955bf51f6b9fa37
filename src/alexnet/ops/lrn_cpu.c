/* Local response normalization (§3.3) on the CPU, one pass per image: lrn.py's formula, for
 * float32 (images, C, HW) tensors, contiguous. lrn_native.py compiles this file on first use
 * and calls it from a few threads, each on its own images.
 *
 *   s[c] = k + alpha * sum of x[j]^2 over the `size` channels j centred on c (cut at the ends)
 *   y[c] = x[c] * s[c]^-beta
 *   dx[c] = dy[c] * s[c]^-beta - 2 alpha beta x[c] * sum over the same j of dy[j] x[j] s[j]^-(beta+1)
 *
 * Each channel's row of HW pixels is read from the few rows around it, which stay in the cache,
 * and every output is written once: no intermediate tensors, no passes over memory between
 * steps. The loops over pixels are plain enough for the compiler to vectorise.
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

void lrn_forward(const float *x, float *y, float *s, long images, long channels, long pixels,
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
            if (beta == 0.75f) {
                for (long p = 0; p < pixels; p++) {
                    float v = k + alpha * sc[p];
                    sc[p] = v;
                    yc[p] = xc[p] / sqrtf(v * sqrtf(v));
                }
            } else {
                for (long p = 0; p < pixels; p++) {
                    float v = k + alpha * sc[p];
                    sc[p] = v;
                    yc[p] = xc[p] * powf(v, -beta);
                }
            }
        }
    }
}

/* Returns 0, or -1 if the scratch row of one image could not be allocated. */
int lrn_backward(const float *dy, const float *x, const float *s, float *dx, long images,
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
