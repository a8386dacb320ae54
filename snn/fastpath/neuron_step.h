/* One IF/LIF neuron step and its surrogate gradient, as spikingjelly computes them in float32:
 * shared by neurons.c and fire_pool.c (built with -ffp-contract=off, so each op rounds alone). */
#ifndef SNN_NEURON_STEP_H
#define SNN_NEURON_STEP_H

#include <math.h>

#include "kernel.h"

/* The surrogate gradient: id 0 Sigmoid, 1 ATan; scale = pi / 2 * alpha and half_alpha = alpha / 2
 * as floats, as spikingjelly's Python computes them before its float ops. */
typedef struct {
    int id;
    float alpha, scale, half_alpha;
} Surrogate;

/* The charge H from V and the current X: V + X (IF, lif 0) or V + (X - V) / tau (LIF). */
INLINE float charge(int lif, float v, float x, float tau) {
    return lif ? v + (x - v) / tau : v + x;
}

/* dS/dH at x = H - threshold, for the surrogate id (a literal at each call, so the branch folds):
 * Sigmoid (s = sigmoid(alpha x); (1 - s) s alpha) or ATan ((alpha / 2) / (1 + (pi / 2 alpha x)^2)). */
INLINE float surrogate(int id, float x, const Surrogate *sg) {
    if (id == 1) {
        float z = x * sg->scale;
        z = z * z + 1.0f;
        return (1.0f / z) * sg->half_alpha;
    }
    const float sig = 1.0f / (1.0f + expf(-(x * sg->alpha)));
    return (1.0f - sig) * sig * sg->alpha;
}

#endif
