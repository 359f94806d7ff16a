// The element-wise passes of a forward — GELU, SiLU, quick-GELU and the softmax's exponentials and sums — with
// AVX-512, sixteen lanes at a time. Swift compiles AmusedKernels for the baseline x86-64 (SSE2: four lanes, no FMA), so
// its SIMD8 FastMath ran at a quarter of the width these CPUs have; measured on a Zen 4, the int8 bundle's step spent
// about a sixth of its time here. Every function is bit-identical to its Swift twin in FastMath.swift: the same IEEE
// operations in the same order, lane by lane (no FMA contraction — the pragma below; negation flips the sign bit, as
// Swift's prefix minus does), so which path runs never changes a result (a NaN stays a NaN, though which of two NaN
// operands an instruction passes on is the compiler's choice), and the tests compare the two bit for bit.

#include "amused_gemm.h"

#if defined(__FAST_MATH__)
#error "elementwise.c must be bit-identical to FastMath.swift: build it without -ffast-math"
#endif

// Clang honours this pragma (SwiftPM compiles C with clang; -ffp-contract=fast on the command line would override it,
// so do not build this file with it). GCC ignores it and fuses by default, so other compilers get the stubs below
// and the Swift loops run.
#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

int amused_elementwise_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

#define AVX512 __attribute__((target("avx512f")))

/// −x, by flipping the sign bit (as Swift's prefix minus: 0 − x would differ for NaN and for −0).
AVX512 static inline __m512 neg16(__m512 x) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
}

/// FastMath.exp: x = n·ln2 + r by the 1.5·2^23 rounding trick, a degree-6 polynomial for e^r, 2^n through the
/// exponent bits; lanes above 88.7 give +inf, below −87.3 give 0.
AVX512 static inline __m512 exp16(__m512 x) {
    __m512 shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f)), _mm512_set1_ps(12582912.0f));
    __m512 n = _mm512_sub_ps(shifted, _mm512_set1_ps(12582912.0f));
    __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693145751953125f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(1.428606765330187e-06f)));
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 120));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 24));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 6));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
    __m512i bits = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(127)), 23));
    __m512 result = _mm512_mul_ps(p, scale);
    result = _mm512_mask_mov_ps(result, _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.7f), _CMP_GT_OQ),
                                _mm512_set1_ps(__builtin_inff()));
    result = _mm512_mask_mov_ps(result, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ), _mm512_setzero_ps());
    return result;
}

/// FastMath.erf: Abramowitz & Stegun 7.1.26 on |x|, the sign put back.
AVX512 static inline __m512 erf16(__m512 x) {
    __m512 zero = _mm512_setzero_ps();
    __mmask16 negative = _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
    __m512 a = _mm512_mask_mov_ps(x, negative, neg16(x));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(_mm512_set1_ps(0.3275911f), a)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_sub_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.453152027f));
    p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(1.421413741f));
    p = _mm512_sub_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(0.284496736f));
    p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 y = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(p, exp16(neg16(_mm512_mul_ps(a, a)))));
    return _mm512_mask_mov_ps(y, negative, neg16(y));
}

/// One function of FastMath.Function on sixteen lanes.
AVX512 static inline __m512 evaluate16(int function, __m512 v, __m512 shift) {
    __m512 one = _mm512_set1_ps(1.0f);
    switch (function) {
    case AMUSED_GELU: {  // 0.5·x·(1 + erf(x·(1/√2)))
        __m512 e = erf16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
        return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(one, e));
    }
    case AMUSED_SILU:  // x / (1 + e^(−x))
        return _mm512_div_ps(v, _mm512_add_ps(one, exp16(neg16(v))));
    case AMUSED_QUICK_GELU:  // x / (1 + e^(−1.702·x))
        return _mm512_div_ps(v, _mm512_add_ps(one, exp16(_mm512_mul_ps(_mm512_set1_ps(-1.702f), v))));
    default:  // e^(x − shift)
        return exp16(_mm512_sub_ps(v, shift));
    }
}

AVX512 void amused_apply(int function, float shift, float *p, long count) {
    __m512 s = _mm512_set1_ps(shift);
    long i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(p + i, evaluate16(function, _mm512_loadu_ps(p + i), s));
    if (i < count) {  // the tail through a zero-padded vector, as the Swift loop does
        __mmask16 m = (__mmask16)((1u << (count - i)) - 1);
        _mm512_mask_storeu_ps(p + i, m, evaluate16(function, _mm512_maskz_loadu_ps(m, p + i), s));
    }
}

AVX512 void amused_softmax_row(float *row, long dim) {
    // The maximum, ignoring NaN (a lane takes v only where v > it, as the scalar `where row[i] > max` did).
    __m512 mx = _mm512_set1_ps(-__builtin_inff());
    long i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m512 v = _mm512_loadu_ps(row + i);
        mx = _mm512_mask_mov_ps(mx, _mm512_cmp_ps_mask(v, mx, _CMP_GT_OQ), v);
    }
    __mmask16 tail = (__mmask16)(i < dim ? (1u << (dim - i)) - 1 : 0);
    if (tail) {
        __m512 v = _mm512_maskz_loadu_ps(tail, row + i);
        mx = _mm512_mask_mov_ps(mx, tail & _mm512_cmp_ps_mask(v, mx, _CMP_GT_OQ), v);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, mx);
    float m = -__builtin_inff();
    for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
    // e^(x − max) and the sum: sixteen running sums (lane l adds elements l, l+16, …), then halves added pairwise.
    __m512 shift = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= dim; i += 16) {
        __m512 e = evaluate16(AMUSED_EXP_SHIFTED, _mm512_loadu_ps(row + i), shift);
        _mm512_storeu_ps(row + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (tail) {
        __m512 e = _mm512_maskz_mov_ps(tail, evaluate16(AMUSED_EXP_SHIFTED, _mm512_maskz_loadu_ps(tail, row + i), shift));
        _mm512_mask_storeu_ps(row + i, tail, e);
        sum = _mm512_add_ps(sum, e);
    }
    _mm512_storeu_ps(lanes, sum);
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] = lanes[l] + lanes[l + width];
    __m512 inv = _mm512_set1_ps(1.0f / lanes[0]);
    for (i = 0; i + 16 <= dim; i += 16) _mm512_storeu_ps(row + i, _mm512_mul_ps(_mm512_loadu_ps(row + i), inv));
    if (tail) _mm512_mask_storeu_ps(row + i, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + i), inv));
}

#else

int amused_elementwise_cpu_supported(void) { return 0; }
void amused_apply(int function, float shift, float *p, long count) { (void)function, (void)shift, (void)p, (void)count; }
void amused_softmax_row(float *row, long dim) { (void)row, (void)dim; }

#endif
