/* A batch's crops as the net sees them on the CPU (§2, §4.1): BatchTransform's arithmetic, one
 * pass over each crop. native.py builds it ahead of use, with -ffp-contract=off.
 *
 * crops: `count` uint8 crops of crop x crop pixels, each (crop, crop, 3) in memory (the loader's
 * channels-last order); images: where the float32 results go, in the same order. windows:
 * (top, left, flipped) per crop, int64. mean, mirrored: the training set's mean image and its
 * mirror, (size, size, 3) float32. shift: one (3,) lighting shift per image of crops_per_image
 * crops, or NULL; std: the (3,) channel std, or NULL.
 *
 *   image = ((float)crop - the mean's window) [+ shift] [/ std]
 *
 * in that order, each step rounded as torch's operations round it, so both give the same bits.
 * A mirrored crop subtracts the mirror's window at (top, size - left - crop), which is the
 * mean's window mirrored. Each row of crop x 3 values is one loop the compiler vectorises, the
 * shift and std tiled along it, into a row allocated once a call. The row then goes out with
 * streaming stores, which write memory without first reading each line of it into the cache:
 * a batch's images are far larger than the cache, and the net reads them from memory anyway.
 * Returns 0, or -1 if the rows could not be allocated.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* out[0:n] = row[0:n], streamed where out is 16-byte aligned (as a row of a 224 px crop is). */
static void store(float *out, const float *row, long n) {
#if defined(__SSE__)
    if (((uintptr_t)out & 15) == 0) {
        long j = 0;
        for (; j + 4 <= n; j += 4) _mm_stream_ps(out + j, _mm_loadu_ps(row + j));
        for (; j < n; j++) out[j] = row[j];
        return;
    }
#endif
    memcpy(out, row, n * sizeof(float));
}

int transform_crops(const uint8_t *crops, float *images, const int64_t *windows, long count,
                    long crops_per_image, long crop, const float *mean, const float *mirrored,
                    long size, const float *shift, const float *std) {
    long row = crop * 3;
    float *rows = malloc(sizeof(float) * 3 * row);
    if (rows == NULL) return -1;
    float *shift_row = rows, *std_row = rows + row, *done = rows + 2 * row;
    for (long j = 0; j < row; j++) std_row[j] = std ? std[j % 3] : 1.0f;
    for (long k = 0; k < count; k++) {
        long top = windows[3 * k], left = windows[3 * k + 1], flipped = windows[3 * k + 2];
        const float *m = flipped ? mirrored + (top * size + size - left - crop) * 3
                                 : mean + (top * size + left) * 3;
        if (shift)
            for (long j = 0; j < row; j++) shift_row[j] = shift[3 * (k / crops_per_image) + j % 3];
        const uint8_t *in = crops + k * crop * row;
        float *out = images + k * crop * row;
        for (long i = 0; i < crop; i++, in += row, out += row, m += size * 3) {
            for (long j = 0; j < row; j++) {
                float value = (float)in[j] - m[j];
                if (shift) value += shift_row[j];
                if (std) value /= std_row[j];
                done[j] = value;
            }
            store(out, done, row);
        }
    }
#if defined(__SSE__)
    _mm_sfence();
#endif
    free(rows);
    return 0;
}
