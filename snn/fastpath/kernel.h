/* What every C kernel shares: how a hot loop is compiled, what an allocation failure returns, and the
 * table of struct layouts that native.py compares with its ctypes declarations before any kernel runs. */
#ifndef SNN_KERNEL_H
#define SNN_KERNEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h> /* also defines __GLIBC__ where the C library is glibc */

#define INLINE static inline __attribute__((always_inline))

/* A kernel's loops, compiled twice on x86-64 with glibc: for the baseline (SSE2, every x86-64 CPU) and for
 * AVX2; the loader picks the copy the CPU runs (target_clones, an ifunc). The library stays portable (it is
 * built without -march=native) and runs 256-bit vectors where the CPU has them. Both copies compute the same
 * floats: no fast-math, and -ffp-contract=off keeps every multiply and add apart (no FMA). Elsewhere, or with
 * -DSNN_ONE_VERSION, one copy for the compiler's target. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__has_attribute) && !defined(SNN_ONE_VERSION)
#if __has_attribute(target_clones)
#define VECTORISED __attribute__((target_clones("avx2", "default"), noinline))
#endif
#endif
#ifndef VECTORISED
#define VECTORISED __attribute__((noinline))
#endif

#define OUT_OF_MEMORY (-1) /* a kernel's return when malloc failed: nothing usable was written */

/* The layout table: each struct's size, and each field's offset and size, as this compiler lays them out.
 * snn_layout(i, &name, &offset, &size) gives entry i ("Struct" or "Struct.field") and returns 1, or returns
 * 0 past the end. snn_openmp() is the OpenMP version the library was built with (0: none, single-threaded). */
typedef struct {
    const char *name;
    int64_t offset, size;
} LayoutEntry;

#define STRUCT_SIZE(s) {#s, 0, (int64_t)sizeof(s)}
#define FIELD(s, f) {#s "." #f, (int64_t)offsetof(s, f), (int64_t)sizeof(((s *)0)->f)}

#ifdef _OPENMP
#define OPENMP_VERSION _OPENMP
#else
#define OPENMP_VERSION 0
#endif

#define LAYOUTS(...)                                                                                 \
    static const LayoutEntry layout_table[] = {__VA_ARGS__};                                         \
    int snn_layout(int64_t i, const char **name, int64_t *offset, int64_t *size) {                   \
        if (i < 0 || i >= (int64_t)(sizeof layout_table / sizeof layout_table[0])) return 0;         \
        *name = layout_table[i].name;                                                                \
        *offset = layout_table[i].offset;                                                            \
        *size = layout_table[i].size;                                                                \
        return 1;                                                                                    \
    }                                                                                                \
    int snn_openmp(void) { return OPENMP_VERSION; }

#endif
