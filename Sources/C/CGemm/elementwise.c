// The element-wise passes of a forward — GELU, SiLU, quick-GELU and the softmax's exponentials and sums — sixteen
// lanes at a time, with AVX-512 or AVX2. Swift compiles AmusedKernels for the baseline x86-64 (SSE2: four lanes, no
// FMA), so its SIMD8 FastMath ran at a quarter of the width AVX-512 CPUs have and half of AVX2's; measured on a Zen 4,
// the int8 bundle's step spent about a sixth of its time here. The code is written once, on clang's 16-lane vector
// type, and compiled for both targets (one zmm or two ymm per vector). Every function is bit-identical to its Swift
// twin in FastMath.swift: the same IEEE operations in the same order, lane by lane (no FMA contraction — the pragma
// below; negation flips the sign bit, as Swift's prefix minus does; selects are bitwise), so which path runs never
// changes a result (a NaN stays a NaN, though which of two NaN operands an instruction passes on is the compiler's
// choice), and the tests compare the paths bit for bit.

#include "amused_gemm.h"

#if defined(__FAST_MATH__)
#error "elementwise.c must be bit-identical to FastMath.swift: build it without -ffast-math"
#endif

// Clang honours this pragma (SwiftPM compiles C with clang; -ffp-contract=fast on the command line would override it,
// so do not build this file with it). GCC ignores it and fuses by default, so other compilers get the stubs below
// and the Swift loops run.
#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)

// The helpers below take and return 16-lane vectors by value; they are always inlined into the two targeted entry
// points, so the calling convention clang warns about never exists.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float vf __attribute__((ext_vector_type(16)));
typedef int vi __attribute__((ext_vector_type(16)));

/// Which of the two builds runs: 512 (AVX-512F), 256 (AVX2), 0 (neither; the Swift loops run).
static int width(void) {
    static int cached = -1;  // relaxed atomics: threads racing to fill it store the same value
    int w = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (w < 0) {
        __builtin_cpu_init();
        w = __builtin_cpu_supports("avx512f") ? 512 : __builtin_cpu_supports("avx2") ? 256 : 0;
        __atomic_store_n(&cached, w, __ATOMIC_RELAXED);
    }
    return w;
}

int amused_elementwise_cpu_supported(void) { return width() != 0; }

#define INLINE static inline __attribute__((always_inline))

INLINE vf splat(float x) { return (vf)x; }

/// Lanes of `yes` where mask is all ones, of `no` elsewhere (mask from a vector comparison: −1 or 0 per lane).
INLINE vf select(vi mask, vf yes, vf no) { return (vf)(((vi)yes & mask) | ((vi)no & ~mask)); }

/// −x, by flipping the sign bit (as Swift's prefix minus: 0 − x would differ for NaN and for −0).
INLINE vf neg(vf x) { return (vf)((vi)x ^ (vi)(int)0x80000000u); }

/// FastMath.exp: x = n·ln2 + r by the 1.5·2^23 rounding trick, a degree-6 polynomial for e^r, 2^n through the
/// exponent bits; lanes above 88.7 give +inf, below −87.3 give 0.
INLINE vf exp16(vf x) {
    vf shifted = x * splat(1.4426950408889634f) + splat(12582912.0f);
    vf n = shifted - splat(12582912.0f);
    vf r = x - n * splat(0.693145751953125f);
    r = r - n * splat(1.428606765330187e-06f);
    vf p = splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    vi bits = (vi)shifted - (vi)0x4B400000;
    vf scale = (vf)((bits + (vi)127) << 23);
    vf result = p * scale;
    result = select(x > splat(88.7f), splat(__builtin_inff()), result);
    return select(x < splat(-87.3f), splat(0.0f), result);
}

/// FastMath.erf: Abramowitz & Stegun 7.1.26 on |x|, the sign put back.
INLINE vf erf16(vf x) {
    vi negative = x < splat(0.0f);
    vf a = select(negative, neg(x), x);
    vf t = splat(1.0f) / (splat(1.0f) + splat(0.3275911f) * a);
    vf p = splat(1.061405429f);
    p = p * t - splat(1.453152027f);
    p = p * t + splat(1.421413741f);
    p = p * t - splat(0.284496736f);
    p = p * t + splat(0.254829592f);
    p = p * t;
    vf y = splat(1.0f) - p * exp16(neg(a * a));
    return select(negative, neg(y), y);
}

/// One function of FastMath.Function on sixteen lanes.
INLINE vf evaluate16(int function, vf v, vf shift) {
    switch (function) {
    case AMUSED_GELU:  // 0.5·x·(1 + erf(x·(1/√2)))
        return (splat(0.5f) * v) * (splat(1.0f) + erf16(v * splat(0.70710678118654752f)));
    case AMUSED_SILU:  // x / (1 + e^(−x))
        return v / (splat(1.0f) + exp16(neg(v)));
    case AMUSED_QUICK_GELU:  // x / (1 + e^(−1.702·x))
        return v / (splat(1.0f) + exp16(splat(-1.702f) * v));
    default:  // e^(x − shift)
        return exp16(v - shift);
    }
}

INLINE vf load(const float *p) {
    vf v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

INLINE void store(float *p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

/// The first `count` (< 16) values at p, zero-padded, as the Swift loop pads its tail.
INLINE vf load_tail(const float *p, long count) {
    float lanes[16] = {0};
    __builtin_memcpy(lanes, p, (unsigned long)count * sizeof(float));
    return load(lanes);
}

INLINE void store_tail(float *p, long count, vf v) {
    float lanes[16];
    store(lanes, v);
    __builtin_memcpy(p, lanes, (unsigned long)count * sizeof(float));
}

INLINE void apply(int function, float shift, float *p, long count) {
    vf s = splat(shift);
    long i = 0;
    for (; i + 16 <= count; i += 16) store(p + i, evaluate16(function, load(p + i), s));
    if (i < count) store_tail(p + i, count - i, evaluate16(function, load_tail(p + i, count - i), s));
}

INLINE void softmax_row(float *row, long dim) {
    // The maximum, ignoring NaN (a lane takes v only where v > it, as the scalar `where row[i] > max` did; a tail's
    // zero padding can only raise a lane to 0, which the scalar maximum below then meets in the row or not — so the
    // tail is compared lane by lane instead).
    vf mx = splat(-__builtin_inff());
    long i = 0;
    for (; i + 16 <= dim; i += 16) {
        vf v = load(row + i);
        mx = select(v > mx, v, mx);
    }
    float lanes[16];
    store(lanes, mx);
    float m = -__builtin_inff();
    for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
    for (long t = i; t < dim; t++) m = row[t] > m ? row[t] : m;
    // e^(x − max) and the sum: sixteen running sums (lane l adds elements l, l+16, …), then halves added pairwise.
    vf shift = splat(m), sum = splat(0.0f);
    for (i = 0; i + 16 <= dim; i += 16) {
        vf e = evaluate16(AMUSED_EXP_SHIFTED, load(row + i), shift);
        store(row + i, e);
        sum = sum + e;
    }
    if (i < dim) {
        // Padding lanes add exactly 0 (not e^(0 − max)), as the Swift sum skips them.
        vf e = evaluate16(AMUSED_EXP_SHIFTED, load_tail(row + i, dim - i), shift);
        store_tail(row + i, dim - i, e);
        store(lanes, e);
        for (long l = dim - i; l < 16; l++) lanes[l] = 0;
        sum = sum + load(lanes);
    }
    store(lanes, sum);
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) lanes[l] = lanes[l] + lanes[l + w];
    vf inv = splat(1.0f / lanes[0]);
    for (i = 0; i + 16 <= dim; i += 16) store(row + i, load(row + i) * inv);
    if (i < dim) store_tail(row + i, dim - i, load_tail(row + i, dim - i) * inv);
}

__attribute__((target("avx512f"))) static void apply_avx512(int function, float shift, float *p, long count) {
    apply(function, shift, p, count);
}
__attribute__((target("avx2"))) static void apply_avx2(int function, float shift, float *p, long count) {
    apply(function, shift, p, count);
}
__attribute__((target("avx512f"))) static void softmax_row_avx512(float *row, long dim) { softmax_row(row, dim); }
__attribute__((target("avx2"))) static void softmax_row_avx2(float *row, long dim) { softmax_row(row, dim); }

int amused_elementwise_width(void) { return width(); }

int amused_apply_with(int w, int function, float shift, float *p, long count) {
    if (w == 512) apply_avx512(function, shift, p, count);
    else if (w == 256) apply_avx2(function, shift, p, count);
    else return -1;
    return 0;
}

int amused_softmax_row_with(int w, float *row, long dim) {
    if (w == 512) softmax_row_avx512(row, dim);
    else if (w == 256) softmax_row_avx2(row, dim);
    else return -1;
    return 0;
}

void amused_apply(int function, float shift, float *p, long count) {
    (void)amused_apply_with(width(), function, shift, p, count);
}

void amused_softmax_row(float *row, long dim) { (void)amused_softmax_row_with(width(), row, dim); }

#else

int amused_elementwise_cpu_supported(void) { return 0; }
int amused_elementwise_width(void) { return 0; }
int amused_apply_with(int w, int function, float shift, float *p, long count) {
    (void)w, (void)function, (void)shift, (void)p, (void)count;
    return -1;
}
int amused_softmax_row_with(int w, float *row, long dim) {
    (void)w, (void)row, (void)dim;
    return -1;
}
void amused_apply(int function, float shift, float *p, long count) { (void)function, (void)shift, (void)p, (void)count; }
void amused_softmax_row(float *row, long dim) { (void)row, (void)dim; }

#endif
