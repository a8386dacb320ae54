/* An IF/LIF neuron layer and the 2x2 max-pool after it, fused: see fire_pool.py.
 *
 * A step of currents is [G, H, W, B] floats (NCHW planes: G = N*C, B = 1; channels_last:
 * G = N, B = C), step t at x + t*xt (xt = 0: the same current at every step). Work goes in
 * blocks of R row pairs (rows 2*h2 .. 2*h2 + 2R - 1 of one g: contiguous in either layout),
 * which pool into R rows of the output. A block is first split into its windows' four
 * corners, four arrays in the order of the pooled outputs ("window space"): every loop after
 * that is one long contiguous pass the compiler vectorises, and the pooling is a maximum of
 * four arrays. The neurons run through all T steps there, in the CPU's cache, and only the
 * pooled spikes [T, G, H/2, W/2, B] are written: the full-size spikes and charges of the
 * unfused layers never reach memory. The backward recomputes the charges from the currents.
 * Float ops are spikingjelly's, in its order (built with -ffp-contract=off), so spikes, the
 * last V and gradients are bit-identical to FusedIFNode / FusedLIFNode followed by aten's
 * max-pool (tests/snn/test_fire_pool.py).
 */
#include <string.h>

#include "neuron_step.h"

#define BLOCK_FLOATS 4096 /* floats of a block's step, at most (unless one row pair is larger) */

typedef struct {
    int64_t G, H, W, B;
} Layout;

typedef struct {
    int64_t T;
    float tau; /* 0: IF; else LIF (decay_input, hard reset to 0) with this tau */
    float threshold;
} Neuron;

LAYOUTS(STRUCT_SIZE(Layout), FIELD(Layout, G), FIELD(Layout, H), FIELD(Layout, W), FIELD(Layout, B),
        STRUCT_SIZE(Neuron), FIELD(Neuron, T), FIELD(Neuron, tau), FIELD(Neuron, threshold),
        STRUCT_SIZE(Surrogate), FIELD(Surrogate, id), FIELD(Surrogate, alpha), FIELD(Surrogate, scale),
        FIELD(Surrogate, half_alpha))

/* A block's windows: R rows of W/2 windows of B channels, n of them; corner k of window i at
 * (k / 2) * row + (k % 2) * B from the window's top-left neuron. */
typedef struct {
    ptrdiff_t R, W2, B, row, n;
} Windows;

/* Block (laid out as a step) -> window space [4][n], or back (to_block). B = 1 is passed as a
 * literal so that NCHW's two-apart columns vectorise as interleaved loads and stores. */
INLINE void move_corners(float *restrict block, float *restrict corners, const Windows *w, ptrdiff_t B,
                         int to_block) {
    for (ptrdiff_t r = 0; r < w->R; r++)
        for (int k = 0; k < 4; k++) {
            float *at = block + (2 * r + k / 2) * w->row + (k % 2) * B, *in = corners + k * w->n + r * w->W2 * B;
            for (ptrdiff_t j = 0; j < w->W2; j++)
                for (ptrdiff_t b = 0; b < B; b++) {
                    if (to_block) at[2 * j * B + b] = in[j * B + b];
                    else in[j * B + b] = at[2 * j * B + b];
                }
        }
}

INLINE void to_windows(const float *block, float *corners, const Windows *w) {
    if (w->B == 1) move_corners((float *)block, corners, w, 1, 0);
    else move_corners((float *)block, corners, w, w->B, 0);
}

INLINE void to_block(const float *corners, float *block, const Windows *w) {
    if (w->B == 1) move_corners(block, (float *)corners, w, 1, 1);
    else move_corners(block, (float *)corners, w, w->B, 1);
}

/* One block's forward: pooled spikes into out (step t at out + t*ot, n floats), the last V into
 * v_last (laid out as a step, when not NULL); returns the spikes fired. Scratch: current, v of
 * 4n floats, fired of 4n ints. */
INLINE int64_t forward_block(int lif, const float *x, ptrdiff_t xt, const Windows *w, const Neuron *n,
                             float *restrict out, ptrdiff_t ot, float *v_last, float *restrict current,
                             float *restrict v, int32_t *restrict fired) {
    const ptrdiff_t len = 4 * w->n;
    int64_t spikes = 0;
    memset(v, 0, len * sizeof(float));
    for (int64_t t = 0; t < n->T; t++) {
        if (t == 0 || xt) to_windows(x + t * xt, current, w);
        int32_t count = 0;
        for (ptrdiff_t i = 0; i < len; i++) {
            const float h = charge(lif, v[i], current[i], n->tau);
            const int32_t s = h >= n->threshold;
            v[i] = h - h * (float)s;
            fired[i] = s;
            count += s;
        }
        spikes += count;
        float *out_t = out + t * ot;
        for (ptrdiff_t i = 0; i < w->n; i++)  /* the maximum of a window's 0/1 spikes */
            out_t[i] = (fired[i] | fired[w->n + i] | fired[2 * w->n + i] | fired[3 * w->n + i]) ? 1.0f : 0.0f;
    }
    if (v_last) to_block(v, v_last, w);
    return spikes;
}

/* One block's backward from the pooled spikes' gradient g (step t at g + t*gt, n floats): dL/dX
 * into grad_x (laid out as x), per step (step t at grad_x + t*xt) or, when xt is 0, summed over
 * the steps in step order. The pool passes a window's gradient to its first neuron (row-major)
 * that spiked, the top-left one when none did: aten's argmax. Scratch: h of T * 4n floats,
 * current, carry, grad of 4n. */
INLINE void backward_block(int lif, int id, const float *x, ptrdiff_t xt, const Windows *w,
                           const Neuron *n, const float *restrict g, ptrdiff_t gt, float *grad_x, const Surrogate *sg,
                           float *restrict h, float *restrict current, float *restrict carry, float *restrict grad) {
    const ptrdiff_t len = 4 * w->n, nw = w->n;
    const float th = n->threshold;
    for (int64_t t = 0; t < n->T; t++) {  /* the charges again, from V = 0 */
        if (t == 0 || xt) to_windows(x + t * xt, current, w);
        const float *before = h + (t - 1) * len;
        float *h_t = h + t * len;
        for (ptrdiff_t i = 0; i < len; i++) {
            const float v = t ? before[i] - before[i] * (float)(before[i] >= th) : 0.0f;
            h_t[i] = charge(lif, v, current[i], n->tau);
        }
    }
    memset(carry, 0, len * sizeof(float));  /* dL/dV from the step after: none after the last */
    for (int64_t t = n->T - 1; t >= 0; t--) {
        float *h_t = h + t * len;
        const float *g_t = g + t * gt;
        for (ptrdiff_t i = 0; i < nw; i++) {  /* dL/dS: the window's gradient to its pool's argmax */
            const int32_t sa = h_t[i] >= th, sb = h_t[nw + i] >= th, sc = h_t[2 * nw + i] >= th;
            const int32_t sd = h_t[3 * nw + i] >= th, na = sa ^ 1, nb = sb ^ 1, nc = sc ^ 1;
            grad[i] = (sa | (nb & nc & (sd ^ 1))) ? g_t[i] : 0.0f;
            grad[nw + i] = (na & sb) ? g_t[i] : 0.0f;
            grad[2 * nw + i] = (na & nb & sc) ? g_t[i] : 0.0f;
            grad[3 * nw + i] = (na & nb & nc & sd) ? g_t[i] : 0.0f;
        }
        for (ptrdiff_t i = 0; i < len; i++) {  /* dL/dS -> this step's dL/dX, in place */
            const float ht = h_t[i], s = (float)(ht >= th);
            const float dsdh = surrogate(id, ht - th, sg);
            const float grad_h = grad[i] * dsdh + carry[i] * ((1.0f - s) - ht * dsdh);
            carry[i] = lif ? grad_h - grad_h / n->tau : grad_h;
            grad[i] = lif ? grad_h / n->tau : grad_h;
        }
        if (xt) to_block(grad, grad_x + t * xt, w);
        else memcpy(h_t, grad, len * sizeof(float));  /* kept for the sum, where its charges were */
    }
    if (!xt) {
        for (int64_t t = 1; t < n->T; t++)
            for (ptrdiff_t i = 0; i < len; i++) h[i] += h[t * len + i];
        to_block(h, grad_x, w);
    }
}

/* forward_block for IF or LIF: literal first arguments, each its own vectorised loops. */
VECTORISED static int64_t forward_one(const float *x, ptrdiff_t xt, const Windows *w, const Neuron *n, float *out,
                                      ptrdiff_t ot, float *v_last, float *current, float *v, int32_t *fired) {
    if (n->tau == 0.0f) return forward_block(0, x, xt, w, n, out, ot, v_last, current, v, fired);
    return forward_block(1, x, xt, w, n, out, ot, v_last, current, v, fired);
}

/* backward_block for IF or LIF, ATan or Sigmoid. */
VECTORISED static void backward_one(const float *x, ptrdiff_t xt, const Windows *w, const Neuron *n, const float *g,
                                    ptrdiff_t gt, float *grad_x, const Surrogate *sg, float *h, float *current,
                                    float *carry, float *grad) {
    const int lif = n->tau != 0.0f;
    if (!lif && sg->id == 1) backward_block(0, 1, x, xt, w, n, g, gt, grad_x, sg, h, current, carry, grad);
    else if (!lif) backward_block(0, 0, x, xt, w, n, g, gt, grad_x, sg, h, current, carry, grad);
    else if (sg->id == 1) backward_block(1, 1, x, xt, w, n, g, gt, grad_x, sg, h, current, carry, grad);
    else backward_block(1, 0, x, xt, w, n, g, gt, grad_x, sg, h, current, carry, grad);
}

/* The blocks of a layout: R row pairs each, R the most dividing H/2 within BLOCK_FLOATS (at least 1). */
static Windows block_windows(const Layout *l) {
    Windows w = {1, l->W / 2, l->B, l->W * l->B, 0};
    for (ptrdiff_t R = 1; R <= l->H / 2; R++)
        if ((l->H / 2) % R == 0 && 2 * R * w.row <= BLOCK_FLOATS) w.R = R;
    w.n = w.R * w.W2 * w.B;
    return w;
}

/* Where block b starts in a step: row 2*R*(b % blocks per g) of g = b / (blocks per g). */
static ptrdiff_t block_start(const Layout *l, const Windows *w, int64_t b) {
    const int64_t per_g = l->H / 2 / w->R;
    return (b / per_g * l->H + 2 * w->R * (b % per_g)) * w->row;
}

/* The pooled spikes out [T, G, H/2, W/2, B] of currents x from V = 0, the last V into v_last (when
 * not NULL); returns the spikes the layer fired (before pooling), or OUT_OF_MEMORY when a thread's
 * scratch could not be allocated (out is then incomplete). Blocks run in parallel. */
int64_t fire_pool_forward(const float *x, int64_t xt, const Layout *layout, const Neuron *neuron, float *out,
                          float *v_last, int threads) {
    const Layout l = *layout;
    const Neuron n = *neuron;
    const Windows w = block_windows(&l);
    const int64_t blocks = l.G * (l.H / 2 / w.R);
    const ptrdiff_t step_out = blocks * w.n;
    int64_t spikes = 0;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(+ : spikes) reduction(| : failed)
    {
        float *scratch = malloc(8 * w.n * sizeof(float)), *current = scratch, *v = scratch + 4 * w.n;
        int32_t *fired = malloc(4 * w.n * sizeof(int32_t));
        const int ready = scratch && fired;
        failed |= !ready;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            if (!ready) continue;
            const ptrdiff_t at = block_start(&l, &w, b);
            spikes += forward_one(x + at, xt, &w, &n, out + b * w.n, step_out, v_last ? v_last + at : NULL, current,
                                  v, fired);
        }
        free(scratch);
        free(fired);
    }
    return failed ? OUT_OF_MEMORY : spikes;
}

/* dL/dX into grad_x (laid out as x; one step, summed over the steps, when xt is 0) from the pooled
 * spikes' gradient g [T, G, H/2, W/2, B]; returns 0, or OUT_OF_MEMORY (grad_x is then incomplete). */
int fire_pool_backward(const float *x, int64_t xt, const Layout *layout, const Neuron *neuron, const float *g,
                       float *grad_x, const Surrogate *sg, int threads) {
    const Layout l = *layout;
    const Neuron n = *neuron;
    const Surrogate s = *sg;
    const Windows w = block_windows(&l);
    const int64_t blocks = l.G * (l.H / 2 / w.R);
    const ptrdiff_t step_g = blocks * w.n, len = 4 * w.n;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        float *h = malloc((n.T + 3) * len * sizeof(float));
        float *current = h + n.T * len, *carry = current + len, *grad = carry + len;
        failed |= !h;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            if (!h) continue;
            const ptrdiff_t at = block_start(&l, &w, b);
            backward_one(x + at, xt, &w, &n, g + b * w.n, step_g, grad_x + at, &s, h, current, carry, grad);
        }
        free(h);
    }
    return failed ? OUT_OF_MEMORY : 0;
}
