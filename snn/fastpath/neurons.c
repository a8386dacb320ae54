/* The IF/LIF multi-step neuron's forward and backward over [T, M] currents: see neurons.py.
 *
 * The same float ops as spikingjelly's reference and its hand-written backward (_ops/lif/cpu.py),
 * in its order (built with -ffp-contract=off): H = V + X (IF) or V + (X - V) / tau (LIF),
 * S = (H >= threshold), V = H - H * S (the hard reset to 0). One call runs all T steps; the
 * M neurons of a step are one contiguous, vectorised loop, split between threads when large.
 * Nothing is allocated here.
 */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "neuron_step.h"

#define PARALLEL_MIN (1 << 16) /* neuron-steps from which a call is split between threads */

/* A layer's steps: T steps of M neurons each; tau 0 for IF, else LIF with this tau. */
typedef struct {
    int64_t T, M;
    float tau, threshold;
} Layer;

LAYOUTS(STRUCT_SIZE(Layer), FIELD(Layer, T), FIELD(Layer, M), FIELD(Layer, tau), FIELD(Layer, threshold),
        STRUCT_SIZE(Surrogate), FIELD(Surrogate, id), FIELD(Surrogate, alpha), FIELD(Surrogate, scale),
        FIELD(Surrogate, half_alpha))

/* This thread's share [from, to) of M neurons, inside a parallel region; 0 when it has none. */
static int my_share(int64_t M, int64_t *from, int64_t *to) {
    int threads = 1, id = 0;
#ifdef _OPENMP
    threads = omp_get_num_threads();
    id = omp_get_thread_num();
#endif
    const int64_t per = (M + threads - 1) / threads;
    *from = id * per;
    *to = *from + per < M ? *from + per : M;
    return *from < *to;
}

INLINE void forward_range(int lif, int keep, const float *restrict x, int64_t xt, float *restrict v, const Layer *l,
                          float *restrict spikes, float *restrict charges, int64_t from, int64_t to) {
    for (int64_t t = 0; t < l->T; t++) {
        const float *x_t = x + t * xt;
        float *s_t = spikes + t * l->M, *h_t = keep ? charges + t * l->M : NULL;
        for (int64_t i = from; i < to; i++) {
            const float h = charge(lif, v[i], x_t[i], l->tau);
            const float s = (float)(h >= l->threshold);
            v[i] = h - h * s;
            s_t[i] = s;
            if (keep) h_t[i] = h;
        }
    }
}

/* One thread's neurons [from, to) through all steps; literal first arguments: each case its own vectorised loop. */
VECTORISED static void forward_share(const float *x, int64_t xt, float *v, const Layer *l, float *spikes,
                                     float *charges, int64_t from, int64_t to) {
    const int lif = l->tau != 0.0f;
    if (lif && charges) forward_range(1, 1, x, xt, v, l, spikes, charges, from, to);
    else if (lif) forward_range(1, 0, x, xt, v, l, spikes, NULL, from, to);
    else if (charges) forward_range(0, 1, x, xt, v, l, spikes, charges, from, to);
    else forward_range(0, 0, x, xt, v, l, spikes, NULL, from, to);
}

/* x [T, M] (step t at x + t*xt; xt 0: the same current at every step) from V = v (M floats,
 * updated in place to the last V): spikes [T, M] and, when charges is not NULL, H [T, M]. */
void if_lif_forward(const float *x, int64_t xt, float *v, const Layer *layer, float *spikes, float *charges,
                    int threads) {
    const Layer l = *layer;
#pragma omp parallel num_threads(threads) if (l.T * l.M >= PARALLEL_MIN)
    {
        int64_t from, to;
        if (my_share(l.M, &from, &to)) forward_share(x, xt, v, &l, spikes, charges, from, to);
    }
}

INLINE void backward_range(int lif, int id, const float *restrict grad_spikes, const float *restrict charges,
                           float *restrict carry, const Layer *l, const Surrogate *sg, float *restrict grad_x,
                           int64_t from, int64_t to) {
    for (int64_t t = l->T - 1; t >= 0; t--) {
        const float *g_t = grad_spikes + t * l->M, *h_t = charges + t * l->M;
        float *gx_t = grad_x + t * l->M;
        for (int64_t i = from; i < to; i++) {
            const float h = h_t[i], s = (float)(h >= l->threshold);
            const float dsdh = surrogate(id, h - l->threshold, sg);
            const float grad_h = g_t[i] * dsdh + carry[i] * ((1.0f - s) - h * dsdh);
            carry[i] = lif ? grad_h - grad_h / l->tau : grad_h;
            gx_t[i] = lif ? grad_h / l->tau : grad_h;
        }
    }
}

VECTORISED static void backward_share(const float *grad_spikes, const float *charges, float *carry, const Layer *l,
                                      const Surrogate *sg, float *grad_x, int64_t from, int64_t to) {
    const int lif = l->tau != 0.0f;
    if (!lif && sg->id == 1) backward_range(0, 1, grad_spikes, charges, carry, l, sg, grad_x, from, to);
    else if (!lif) backward_range(0, 0, grad_spikes, charges, carry, l, sg, grad_x, from, to);
    else if (sg->id == 1) backward_range(1, 1, grad_spikes, charges, carry, l, sg, grad_x, from, to);
    else backward_range(1, 0, grad_spikes, charges, carry, l, sg, grad_x, from, to);
}

/* dL/dX [T, M] from dL/dS [T, M] and the charges H [T, M]; carry (M floats) holds dL/dV of the last
 * V (zeros when it reaches no loss) and returns dL/dV of the initial V. */
void if_lif_backward(const float *grad_spikes, const float *charges, float *carry, const Layer *layer,
                     const Surrogate *spec, float *grad_x, int threads) {
    const Layer l = *layer;
    const Surrogate sg = *spec;
#pragma omp parallel num_threads(threads) if (l.T * l.M >= PARALLEL_MIN)
    {
        int64_t from, to;
        if (my_share(l.M, &from, &to)) backward_share(grad_spikes, charges, carry, &l, &sg, grad_x, from, to);
    }
}
