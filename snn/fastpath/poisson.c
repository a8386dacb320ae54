/* The FC-SNN's Poisson input current from each image's fractional pixels: see poisson.py.
 *
 * Entry k of a batch's fractional pixels (Pixels) spikes at step t when its uniform int16 lane
 * lanes[k*T + t] is below its threshold. The forward adds, for every spike, the pixel's weights (weight_t [P, O],
 * pixel-major) into the image's current; the backward sums, for every spike, the current's
 * gradient into the pixel's weight gradient. A pixel's spikes are first made 0/1 floats (one
 * vectorised compare of its T lanes), then multiply its weights (or gradients) in one vectorised
 * loop over the steps per output: no branch per spike.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 16 /* partial sums of the backward's step sums, one vector register */

/* A batch's fractional pixels: image n's are entries offsets[n] .. offsets[n+1] - 1 of pixels (the
 * pixel's index) and thresholds, and rows of lanes [M, T]; N images, O outputs, T steps. */
typedef struct {
    const int16_t *lanes, *thresholds;
    const int64_t *pixels, *offsets;
    int64_t N, O, T;
} Pixels;

/* current [T, N, O] = constant [N, O] + the spiking pixels' weights, summed in pixel order. */
void poisson_current_forward(const Pixels *pixels, const float *weight_t, const float *constant, float *current,
                             int threads) {
    const Pixels px = *pixels;
    const int64_t N = px.N, O = px.O, T = px.T;
#pragma omp parallel num_threads(threads)
    {
        float *acc = malloc(O * T * sizeof(float)); /* [O, T]: the image's current, output-major */
        float *spikes = malloc(T * sizeof(float));  /* one pixel's spikes, 0 or 1 */
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            memset(acc, 0, O * T * sizeof(float));
            for (int64_t k = px.offsets[n]; k < px.offsets[n + 1]; k++) {
                const int16_t *lane = px.lanes + k * T, threshold = px.thresholds[k];
                for (int64_t t = 0; t < T; t++) spikes[t] = (float)(lane[t] < threshold);
                const float *w = weight_t + px.pixels[k] * O;
                for (int64_t o = 0; o < O; o++) {  /* a spike times the weight, as the torch path's matmul */
                    const float w_o = w[o];
                    float *a = acc + o * T;
                    for (int64_t t = 0; t < T; t++) a[t] += spikes[t] * w_o;
                }
            }
            for (int64_t t = 0; t < T; t++)
                for (int64_t o = 0; o < O; o++) current[(t * N + n) * O + o] = acc[o * T + t] + constant[n * O + o];
        }
        free(acc);
        free(spikes);
    }
}

/* grad_weight_t [P, O] (overwritten) = for every spike, the current's gradient grad [T, N, O] at its
 * step, image and output (a 0/1 spike times the gradient, as the torch path's matmul). Each thread
 * sums into its own [P, O]; they are added in thread order. */
void poisson_current_backward(const Pixels *pixels, const float *grad, int64_t P, float *grad_weight_t, int threads) {
    const Pixels px = *pixels;
    const int64_t N = px.N, O = px.O, T = px.T;
    int used = 1;
#ifdef _OPENMP
    used = threads < omp_get_max_threads() ? threads : omp_get_max_threads();
    if (used < 1) used = 1;
#endif
    float *sums = calloc((size_t)used * P * O, sizeof(float));
#pragma omp parallel num_threads(used)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        float *mine = sums + (size_t)id * P * O;
        float *g = malloc(O * T * sizeof(float));     /* [O, T]: the image's gradient, output-major */
        float *spikes = malloc(T * sizeof(float));    /* one pixel's spikes, 0 or 1 */
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            for (int64_t t = 0; t < T; t++)
                for (int64_t o = 0; o < O; o++) g[o * T + t] = grad[(t * N + n) * O + o];
            for (int64_t k = px.offsets[n]; k < px.offsets[n + 1]; k++) {
                const int16_t *lane = px.lanes + k * T, threshold = px.thresholds[k];
                for (int64_t t = 0; t < T; t++) spikes[t] = (float)(lane[t] < threshold);
                float *gw = mine + px.pixels[k] * O;
                for (int64_t o = 0; o < O; o++) {  /* the spikes' dot product with the gradient */
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
        free(g);
        free(spikes);
    }
    memcpy(grad_weight_t, sums, P * O * sizeof(float));
    for (int i = 1; i < used; i++)
        for (int64_t j = 0; j < P * O; j++) grad_weight_t[j] += sums[(size_t)i * P * O + j];
    free(sums);
}
