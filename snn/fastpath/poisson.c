/* The FC-SNN's Poisson input current from each image's fractional pixels: see poisson.py.
 *
 * Entry k of a batch's fractional pixels (Pixels) spikes at step t when its uniform int16 lane
 * lanes[k*T + t] is below its threshold. The forward adds, for every spike, the pixel's weights (weight_t [P, O],
 * pixel-major) into the image's current; the backward sums, for every spike, the current's
 * gradient into the pixel's weight gradient. A pixel's spikes are first made 0/1 floats (one
 * vectorised compare of its T lanes), then multiply its weights (or gradients) in one vectorised
 * loop over the steps per output: no branch per spike.
 */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernel.h"

#define LANES 16 /* partial sums of the backward's step sums, one vector register */

/* A batch's fractional pixels: image n's are entries offsets[n] .. offsets[n+1] - 1 of pixels (the
 * pixel's index) and thresholds, and rows of lanes [M, T]; N images, O outputs, T steps. */
typedef struct {
    const int16_t *lanes, *thresholds;
    const int64_t *pixels, *offsets;
    int64_t N, O, T;
} Pixels;

LAYOUTS(STRUCT_SIZE(Pixels), FIELD(Pixels, lanes), FIELD(Pixels, thresholds), FIELD(Pixels, pixels),
        FIELD(Pixels, offsets), FIELD(Pixels, N), FIELD(Pixels, O), FIELD(Pixels, T))

/* Image n's current [T, N, O] (its column of it): constant [N, O] + its spiking pixels' weights, in pixel
 * order. Scratch: acc of O * T floats, spikes of T. */
VECTORISED static void image_current(const Pixels *px, int64_t n, const float *weight_t, const float *constant,
                                     float *current, float *restrict acc, float *restrict spikes) {
    const int64_t N = px->N, O = px->O, T = px->T;
    memset(acc, 0, O * T * sizeof(float)); /* [O, T]: the image's current, output-major */
    for (int64_t k = px->offsets[n]; k < px->offsets[n + 1]; k++) {
        const int16_t *lane = px->lanes + k * T, threshold = px->thresholds[k];
        for (int64_t t = 0; t < T; t++) spikes[t] = (float)(lane[t] < threshold);
        const float *w = weight_t + px->pixels[k] * O;
        for (int64_t o = 0; o < O; o++) { /* a spike times the weight, as a matmul computes it */
            const float w_o = w[o];
            float *a = acc + o * T;
            for (int64_t t = 0; t < T; t++) a[t] += spikes[t] * w_o;
        }
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t o = 0; o < O; o++) current[(t * N + n) * O + o] = acc[o * T + t] + constant[n * O + o];
}

/* current [T, N, O] = constant [N, O] + the spiking pixels' weights, summed in pixel order; returns 0, or
 * OUT_OF_MEMORY (current is then incomplete). */
int poisson_current_forward(const Pixels *pixels, const float *weight_t, const float *constant, float *current,
                            int threads) {
    const Pixels px = *pixels;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *acc = malloc(px.O * px.T * sizeof(float)), *spikes = malloc(px.T * sizeof(float));
        const int ready = acc && spikes;
        failed |= !ready;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < px.N; n++)
            if (ready) image_current(&px, n, weight_t, constant, current, acc, spikes);
        free(acc);
        free(spikes);
    }
    return failed ? OUT_OF_MEMORY : 0;
}

/* Adds image n's spikes' gradients into sums [P, O]: for every spike, the current's gradient grad [T, N, O]
 * at its step, image and output (a 0/1 spike times the gradient). Scratch: g of O * T floats, spikes of T. */
VECTORISED static void image_gradient(const Pixels *px, int64_t n, const float *grad, float *sums,
                                      float *restrict g, float *restrict spikes) {
    const int64_t N = px->N, O = px->O, T = px->T;
    for (int64_t t = 0; t < T; t++) /* [O, T]: the image's gradient, output-major */
        for (int64_t o = 0; o < O; o++) g[o * T + t] = grad[(t * N + n) * O + o];
    for (int64_t k = px->offsets[n]; k < px->offsets[n + 1]; k++) {
        const int16_t *lane = px->lanes + k * T, threshold = px->thresholds[k];
        for (int64_t t = 0; t < T; t++) spikes[t] = (float)(lane[t] < threshold);
        float *gw = sums + px->pixels[k] * O;
        for (int64_t o = 0; o < O; o++) { /* the spikes' dot product with the gradient */
            const float *g_o = g + o * T;
            float part[LANES] = {0};
            int64_t t = 0;
            for (; t + LANES <= T; t += LANES)
                for (int j = 0; j < LANES; j++) part[j] += spikes[t + j] * g_o[t + j];
            for (; t < T; t++) part[0] += spikes[t] * g_o[t];
            float s = 0.0f;
            for (int j = 0; j < LANES; j++) s += part[j];
            gw[o] += s;
        }
    }
}

/* grad_weight_t [P, O] (overwritten) from the current's gradient grad [T, N, O]: each thread sums its images
 * into its own [P, O], and those are added in thread order (deterministic for a thread count). Returns 0, or
 * OUT_OF_MEMORY (grad_weight_t is then incomplete). */
int poisson_current_backward(const Pixels *pixels, const float *grad, int64_t P, float *grad_weight_t, int threads) {
    const Pixels px = *pixels;
    const int64_t O = px.O;
    int used = 1;
#ifdef _OPENMP
    used = threads < omp_get_max_threads() ? threads : omp_get_max_threads();
    if (used < 1) used = 1;
#endif
    float *sums = calloc((size_t)used * P * O, sizeof(float));
    if (!sums) return OUT_OF_MEMORY;
    int failed = 0;
#pragma omp parallel num_threads(used) reduction(| : failed)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        float *g = malloc(O * px.T * sizeof(float)), *spikes = malloc(px.T * sizeof(float));
        const int ready = g && spikes;
        failed |= !ready;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < px.N; n++)
            if (ready) image_gradient(&px, n, grad, sums + (size_t)id * P * O, g, spikes);
        free(g);
        free(spikes);
    }
    if (!failed) {
        memcpy(grad_weight_t, sums, P * O * sizeof(float));
        for (int i = 1; i < used; i++)
            for (int64_t j = 0; j < P * O; j++) grad_weight_t[j] += sums[(size_t)i * P * O + j];
    }
    free(sums);
    return failed ? OUT_OF_MEMORY : 0;
}
