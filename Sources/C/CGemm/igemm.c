// int8 products with AVX-512 VNNI: activations quantized per row to unsigned bytes (asymmetric: a step and a zero
// point per row, so the 256 levels span the row's own range — after GELU or a ReLU that range is lopsided) times int8
// weights stored per output channel (the bundle's int8 scheme, [out, in] row-major, as PyTorch's Linear keeps them),
// int32 accumulation, rescaled to float32. VPDPBUSD multiplies unsigned by signed bytes, which is what the zero point
// needs: zero[i] · Σ_k w[j,k] is subtracted once per output. An 8×32 tile of
// C is accumulated from 32-column panels of the weights, packed per call (32 × k bytes at a time), against 4 activation
// bytes broadcast per step — no horizontal sums.

#include "amused_gemm.h"

#include <math.h>

#if defined(__FAST_MATH__)
#error "igemm.c must be bit-identical to its portable loops: build it without -ffast-math"
#endif

// The rescales are written mul, mul, add, as the portable loop computes them; fusing them into FMAs would change bits.
#pragma clang fp contract(off)

/// Four bytes at p (any alignment) as one int32: the word the kernels broadcast.
static inline int32_t word_at(const void *p) {
    int32_t w;
    __builtin_memcpy(&w, p, sizeof w);
    return w;
}

/// The step and zero point of a row spanning [lo, hi] (both widened to include 0, so 0 is exact): 256 levels.
static void row_range(float lo, float hi, float *step, int32_t *zero) {
    lo = lo < 0 ? lo : 0;
    hi = hi > 0 ? hi : 0;
    float s = (hi - lo) / 255.0f;
    // A row within 1e-30 of zero (or holding infinities or NaN only) quantizes to its zero point.
    if (!(s >= 1e-30f) || s == INFINITY) s = 1.0f;
    float z = nearbyintf(-lo / s);
    *step = s;
    *zero = (int32_t)(z > 255.0f ? 255.0f : z < 0.0f ? 0.0f : z == z ? z : 0.0f);
}

/// Widens [*lo, *hi] over row[from..<k] (comparisons ignore NaN): the portable quantizer's whole row, the AVX-512
/// one's ragged end.
static void widen_range(const float *row, long from, long k, float *lo, float *hi) {
    for (long p = from; p < k; p++) {
        *lo = row[p] < *lo ? row[p] : *lo;
        *hi = row[p] > *hi ? row[p] : *hi;
    }
}

/// Quantizes row[from..<k] with step 1/inv and zero point zf: nearest even, NaN → the zero point (never UB), clamped
/// to 0…255.
static void quantize_span(const float *row, long from, long k, float inv, float zf, uint8_t *out) {
    for (long p = from; p < k; p++) {
        float v = nearbyintf(row[p] * inv) + zf;
        v = v > 255.0f ? 255.0f : v < 0.0f ? 0.0f : v == v ? v : zf;
        out[p] = (uint8_t)v;
    }
}

/// Fills a quantized row past k with its zero point up to 4·⌈k/4⌉ (the kernels read depth in fours), within ldq.
static void pad_row(uint8_t *out, long k, long ldq, int32_t z) {
    for (long pad = k; pad < ((k + 3) & ~3L) && pad < ldq; pad++) out[pad] = (uint8_t)z;
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

int amused_igemm_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vnni")
               ? 1
               : 0;
}

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

enum { IMR = 8, INR = 32 };  // register tile: 8 rows × 32 columns = 16 zmm accumulators

/// Packs columns j..j+nr (nr ≤ 32) of a row-major matrix for the kernels: rows of `bytes` bytes (row stride `ldb`
/// bytes) cut into 4-byte words (four int8 values or two bfloat16 ones), and for each word of depth the 32 columns'
/// words side by side (two 64-byte vectors); zero past nr and past the row's end.
static void pack_words(long nr, long bytes, const uint8_t *b, long ldb, uint32_t *out) {
    long words = (bytes + 3) / 4, whole = bytes / 4;
    for (long c = 0; c < INR; c++) {
        uint32_t *dst = out + c;
        if (c >= nr) {
            for (long q = 0; q < words; q++) dst[q * INR] = 0;
            continue;
        }
        const uint8_t *row = b + c * ldb;
        // A word at a time (memcpy: the row need not be aligned); a ragged end padded with zeros.
        for (long q = 0; q < whole; q++) __builtin_memcpy(dst + q * INR, row + 4 * q, 4);
        if (whole < words) {
            uint8_t last[4] = {0, 0, 0, 0};
            for (long p = 4 * whole; p < bytes; p++) last[p - 4 * whole] = row[p];
            __builtin_memcpy(dst + whole * INR, last, 4);
        }
    }
}

/// The int8 panel of columns j..j+nr of B (n×k, row stride ldb) and sums[0..<nr] = Σ_p b[j+c, p].
static void pack_b(long nr, long k, const int8_t *b, long ldb, int8_t *out, int32_t *sums) {
    pack_words(nr, k, (const uint8_t *)b, ldb, (uint32_t *)out);
    for (long c = 0; c < nr; c++) {
        int32_t sum = 0;
        for (long p = 0; p < k; p++) sum += b[c * ldb + p];
        sums[c] = sum;
    }
}

/// C rows i..i+mr (mr ≤ 8), columns j..j+nr (nr ≤ 32) from the packed panel: VPDPBUSD of 4 activation bytes
/// broadcast against 32 columns × 4 weight bytes per step, no horizontal sums; then the rescale, in the portable
/// loop's order (dot · row scale, then · column scale, then + bias), in separate statements so nothing is fused.
VNNI static void kernel_i8(long mr, long nr, long k4, const uint8_t *a, long lda, const int8_t *panel,
                           const float *rowscale, const int32_t *rowzero, const float *colscale,
                           const int32_t *colsum, const float *bias, float *c, long ldc) {
    __m512i acc0[IMR], acc1[IMR];
    for (int r = 0; r < IMR; r++) acc0[r] = acc1[r] = _mm512_setzero_si512();
    if (mr == IMR) {
        for (long q = 0; q < k4; q++) {
            __m512i w0 = _mm512_loadu_si512(panel + q * 128), w1 = _mm512_loadu_si512(panel + q * 128 + 64);
#pragma GCC unroll 8
            for (int r = 0; r < IMR; r++) {
                __m512i x = _mm512_set1_epi32(word_at(a + r * lda + 4 * q));
                acc0[r] = _mm512_dpbusd_epi32(acc0[r], x, w0);
                acc1[r] = _mm512_dpbusd_epi32(acc1[r], x, w1);
            }
        }
    } else {
        for (long q = 0; q < k4; q++) {
            __m512i w0 = _mm512_loadu_si512(panel + q * 128), w1 = _mm512_loadu_si512(panel + q * 128 + 64);
            for (long r = 0; r < mr; r++) {
                __m512i x = _mm512_set1_epi32(word_at(a + r * lda + 4 * q));
                acc0[r] = _mm512_dpbusd_epi32(acc0[r], x, w0);
                acc1[r] = _mm512_dpbusd_epi32(acc1[r], x, w1);
            }
        }
    }
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr <= 16 ? 0 : nr >= 32 ? 0xffff : (__mmask16)((1u << (nr - 16)) - 1);
    __m512i sum0 = _mm512_maskz_loadu_epi32(m0, colsum), sum1 = _mm512_maskz_loadu_epi32(m1, colsum + 16);
    __m512 s0 = _mm512_maskz_loadu_ps(m0, colscale), s1 = _mm512_maskz_loadu_ps(m1, colscale + 16);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (long r = 0; r < mr; r++) {
        __m512 rs = _mm512_set1_ps(rowscale[r]);
        __m512i z = _mm512_set1_epi32(rowzero[r]);
        __m512 v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[r], _mm512_mullo_epi32(sum0, z)));
        __m512 v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[r], _mm512_mullo_epi32(sum1, z)));
        v0 = _mm512_mul_ps(v0, rs);
        v1 = _mm512_mul_ps(v1, rs);
        v0 = _mm512_mul_ps(v0, s0);
        v1 = _mm512_mul_ps(v1, s1);
        if (bias) {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
        }
        _mm512_mask_storeu_ps(c + r * ldc, m0, v0);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, v1);
    }
}

VNNI void amused_igemm_u8s8(long m, long n, long k, const uint8_t *a, long lda, const int8_t *b, long ldb,
                            const float *rowscale, const int32_t *rowzero, const float *colscale, const float *bias,
                            float *c, long ldc, int8_t *pack) {
    long k4 = (k + 3) / 4;
    int32_t sums[INR];
    // One panel of 32 columns at a time (32 × k bytes, within L2 for the model's depths) swept by every row.
    for (long j = 0; j < n; j += INR) {
        long nr = n - j < INR ? n - j : INR;
        pack_b(nr, k, b + j * ldb, ldb, pack, sums);
        for (long i = 0; i < m; i += IMR) {
            long mr = m - i < IMR ? m - i : IMR;
            kernel_i8(mr, nr, k4, a + i * lda, lda, pack, rowscale + i, rowzero + i, colscale + j, sums,
                      bias ? bias + j : 0,
                      c + i * ldc + j, ldc);
        }
    }
}

/// `amused_quantize_rows_u8` with AVX-512, bit-identical: the same product x · (1/s), rounded to nearest even
/// (VRNDSCALEPS, as nearbyintf), plus the zero point, NaN replaced by the zero point, clamped to 0…255.
__attribute__((target("avx512f,avx512bw"))) static void quantize_rows_avx512(long m, long k, const float *x, long ldx,
                                                                             uint8_t *q, long ldq, float *scale,
                                                                             int32_t *zero) {
    for (long i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
        long p = 0;
        for (; p + 16 <= k; p += 16) {
            // min/max(v, acc) return acc when v is NaN, as the portable comparisons ignore NaN.
            __m512 v = _mm512_loadu_ps(row + p);
            vlo = _mm512_min_ps(v, vlo);
            vhi = _mm512_max_ps(v, vhi);
        }
        float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
        widen_range(row, p, k, &lo, &hi);
        float s;
        int32_t z;
        row_range(lo, hi, &s, &z);
        float inv = 1.0f / s, zf = (float)z;
        const __m512 vinv = _mm512_set1_ps(inv), vz = _mm512_set1_ps(zf), top = _mm512_set1_ps(255.0f);
        uint8_t *out = q + i * ldq;
        for (p = 0; p + 16 <= k; p += 16) {
            __m512 v = _mm512_mul_ps(_mm512_loadu_ps(row + p), vinv);
            v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_add_ps(v, vz);
            v = _mm512_mask_mov_ps(vz, _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
            v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), top);
            _mm_storeu_si128((__m128i *)(out + p), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
        }
        quantize_span(row, p, k, inv, zf, out);
        pad_row(out, k, ldq, z);
        scale[i] = s;
        zero[i] = z;
    }
}

// The same products on CPUs with AVX2 but no VNNI (Zen 3, Haswell to Alder Lake's E-cores, …): the levels held in
// 16 bits — activations quantized straight into 16-bit rows (`amused_quantize_rows_u16`), weights sign-extended as
// each panel is packed — and VPMADDWD multiplying pairs of depth into exact int32 sums (at most 2·255·128 per pair), added by
// VPADDD. The sums, hence the results, are the VNNI kernel's and the portable loop's to the bit. (VPMADDUBSW would
// multiply bytes directly but saturates at 16 bits, which 255 × 127 pairs overflow.) On a Zen 3 core VPMADDWD + VPADDD
// sustain about 1.6 times the FMA unit's float32 rate (`amused_int16_peak_gops`); a 6×16 tile of C lives in 12 ymm.

#define AVX2 __attribute__((target("avx2")))  // no "fma": nothing here may fuse

#include "transpose8.h"

enum { WMR = 6, WNR = 16 };

int amused_igemm_avx2_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

/// `amused_quantize_rows_u8` with AVX2, writing each level as 16 bits for the kernel below, bit-identical: the same
/// product x · (1/s), rounded to nearest even (VROUNDPS, as nearbyintf), plus the zero point, NaN replaced by the zero
/// point, clamped to 0…255; row i padded with its zero point up to 2·⌈k/2⌉ (within ldo).
AVX2 void amused_quantize_rows_u16(long m, long k, const float *x, long ldx, uint16_t *out, long ldo, float *scale,
                                   int32_t *zero) {
    for (long i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
        long p = 0;
        for (; p + 8 <= k; p += 8) {
            // min/max(v, acc) return acc when v is NaN, as the portable comparisons ignore NaN.
            __m256 v = _mm256_loadu_ps(row + p);
            vlo = _mm256_min_ps(v, vlo);
            vhi = _mm256_max_ps(v, vhi);
        }
        float los[8], his[8];
        _mm256_storeu_ps(los, vlo);
        _mm256_storeu_ps(his, vhi);
        float lo = 0, hi = 0;
        widen_range(los, 0, 8, &lo, &hi);
        widen_range(his, 0, 8, &lo, &hi);
        widen_range(row, p, k, &lo, &hi);
        float s;
        int32_t z;
        row_range(lo, hi, &s, &z);
        float inv = 1.0f / s, zf = (float)z;
        const __m256 vinv = _mm256_set1_ps(inv), vz = _mm256_set1_ps(zf), top = _mm256_set1_ps(255.0f);
        uint16_t *dst = out + i * ldo;
        for (p = 0; p + 16 <= k; p += 16) {
            __m256i half[2];
            for (int h = 0; h < 2; h++) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + p + 8 * h), vinv);
                v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                v = _mm256_add_ps(v, vz);
                v = _mm256_blendv_ps(vz, v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
                v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), top);
                half[h] = _mm256_cvtps_epi32(v);
            }
            // PACKUSDW packs within 128-bit lanes: [a0-3 b0-3 | a4-7 b4-7]; VPERMQ puts the quarters in order.
            __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(half[0], half[1]), 0xd8);
            _mm256_storeu_si256((__m256i *)(dst + p), packed);
        }
        for (; p < k; p++) {
            float v = nearbyintf(row[p] * inv) + zf;
            v = v > 255.0f ? 255.0f : v < 0.0f ? 0.0f : v == v ? v : zf;
            dst[p] = (uint16_t)v;
        }
        if (k % 2 && k < ldo) dst[k] = (uint16_t)z;
        scale[i] = s;
        zero[i] = z;
    }
}

/// Columns j..j+nr (nr ≤ 16) of B (n×k int8, row stride ldb) as 16-bit pairs of depth, the 16 columns' pairs side by
/// side (two 32-byte vectors per pair), zero past nr and past k; sums[c] = Σ_p b[j+c, p] for c < nr. Eight columns at
/// a time, sixteen bytes of each: sign-extended to eight pairs, transposed 8×8 in registers, summed by VPMADDWD
/// against ones (a scalar loop packed at about a sixth of the kernel's time).
AVX2 static void pack_b_pairs(long nr, long k, const int8_t *b, long ldb, int16_t *out, int32_t *sums) {
    long k2 = (k + 1) / 2, whole = k / 16;
    const __m256i ones = _mm256_set1_epi16(1);
    for (long half = 0; half < WNR; half += 8) {
        __m256i sum[8];
        for (int c = 0; c < 8; c++) sum[c] = _mm256_setzero_si256();
        for (long q8 = 0; q8 < whole; q8++) {
            __m256 r[8];
            for (int c = 0; c < 8; c++) {
                __m256i v = half + c < nr
                                ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + (half + c) * ldb + 16 * q8)))
                                : _mm256_setzero_si256();
                sum[c] = _mm256_add_epi32(sum[c], _mm256_madd_epi16(v, ones));
                r[c] = _mm256_castsi256_ps(v);
            }
            transpose8(r);  // r[q] now holds pair 8·q8 + q of the eight columns
            for (int q = 0; q < 8; q++)
                _mm256_storeu_ps((float *)(out + ((8 * q8 + q) * WNR + half) * 2), r[q]);
        }
        for (int c = 0; c < 8; c++) {
            int16_t *dst = out + 2 * (half + c);
            int32_t lanes[8], total = 0;
            _mm256_storeu_si256((__m256i *)lanes, sum[c]);
            for (int l = 0; l < 8; l++) total += lanes[l];
            const int8_t *row = b + (half + c) * ldb;
            for (long q = 8 * whole; q < k2; q++) {
                int16_t lo = 0, hi = 0;
                if (half + c < nr) {
                    lo = row[2 * q];
                    hi = 2 * q + 1 < k ? row[2 * q + 1] : 0;
                    total += lo + hi;
                }
                dst[q * 2 * WNR] = lo;
                dst[q * 2 * WNR + 1] = hi;
            }
            if (half + c < nr) sums[half + c] = total;
        }
    }
}

/// C rows i..i+mr (mr ≤ 6), columns j..j+nr (nr ≤ 16): VPMADDWD of one activation pair broadcast against 16 columns'
/// weight pairs, VPADDD into the accumulators; then the VNNI kernel's rescale, in the same order.
AVX2 static void kernel_i16(long mr, long nr, long k2, const uint16_t *a, long lda, const int16_t *panel,
                            const float *rowscale, const int32_t *rowzero, const float *colscale,
                            const int32_t *colsum, const float *bias, float *c, long ldc) {
    __m256i acc0[WMR], acc1[WMR];
    for (int r = 0; r < WMR; r++) acc0[r] = acc1[r] = _mm256_setzero_si256();
    if (mr == WMR) {
        for (long q = 0; q < k2; q++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(panel + q * 32));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(panel + q * 32 + 16));
#pragma GCC unroll 6
            for (int r = 0; r < WMR; r++) {
                __m256i x = _mm256_set1_epi32(word_at(a + r * lda + 2 * q));
                acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(x, w0));
                acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(x, w1));
            }
        }
    } else {
        for (long q = 0; q < k2; q++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(panel + q * 32));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(panel + q * 32 + 16));
            for (long r = 0; r < mr; r++) {
                __m256i x = _mm256_set1_epi32(word_at(a + r * lda + 2 * q));
                acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(x, w0));
                acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(x, w1));
            }
        }
    }
    // Masked tails as in the float32 AVX2 kernel: lanes at or past nr are neither read nor written.
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr - 8), lane);
    __m256i sum0 = _mm256_maskload_epi32(colsum, m0), sum1 = _mm256_maskload_epi32(colsum + 8, m1);
    __m256 s0 = _mm256_maskload_ps(colscale, m0), s1 = _mm256_maskload_ps(colscale + 8, m1);
    __m256 b0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
    __m256 b1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
    for (long r = 0; r < mr; r++) {
        __m256 rs = _mm256_set1_ps(rowscale[r]);
        __m256i z = _mm256_set1_epi32(rowzero[r]);
        __m256 v0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc0[r], _mm256_mullo_epi32(sum0, z)));
        __m256 v1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc1[r], _mm256_mullo_epi32(sum1, z)));
        v0 = _mm256_mul_ps(v0, rs);
        v1 = _mm256_mul_ps(v1, rs);
        v0 = _mm256_mul_ps(v0, s0);
        v1 = _mm256_mul_ps(v1, s1);
        if (bias) {
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
        }
        _mm256_maskstore_ps(c + r * ldc, m0, v0);
        _mm256_maskstore_ps(c + r * ldc + 8, m1, v1);
    }
}

AVX2 void amused_igemm_u16s8_avx2(long m, long n, long k, const uint16_t *a, long lda, const int8_t *b, long ldb,
                                  const float *rowscale, const int32_t *rowzero, const float *colscale,
                                  const float *bias, float *c, long ldc, int16_t *pack) {
    long k2 = (k + 1) / 2;
    int32_t sums[WNR];
    // As the VNNI kernel: one panel of 16 columns (64 · ⌈k/2⌉ bytes, in L2) swept by every row.
    for (long j = 0; j < n; j += WNR) {
        long nr = n - j < WNR ? n - j : WNR;
        pack_b_pairs(nr, k, b + j * ldb, ldb, pack, sums);
        for (long i = 0; i < m; i += WMR) {
            long mr = m - i < WMR ? m - i : WMR;
            kernel_i16(mr, nr, k2, a + i * lda, lda, pack, rowscale + i, rowzero + i, colscale + j, sums,
                       bias ? bias + j : 0, c + i * ldc + j, ldc);
        }
    }
}

#else

int amused_igemm_cpu_supported(void) { return 0; }
int amused_igemm_avx2_cpu_supported(void) { return 0; }
void amused_quantize_rows_u16(long m, long k, const float *x, long ldx, uint16_t *out, long ldo, float *scale,
                              int32_t *zero) {
    (void)m, (void)k, (void)x, (void)ldx, (void)out, (void)ldo, (void)scale, (void)zero;
}
void amused_igemm_u16s8_avx2(long m, long n, long k, const uint16_t *a, long lda, const int8_t *b, long ldb,
                             const float *rowscale, const int32_t *rowzero, const float *colscale, const float *bias,
                             float *c, long ldc, int16_t *pack) {
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)rowscale, (void)rowzero, (void)colscale,
        (void)bias, (void)c, (void)ldc, (void)pack;
}

void amused_igemm_u8s8(long m, long n, long k, const uint8_t *a, long lda, const int8_t *b, long ldb,
                       const float *rowscale, const int32_t *rowzero, const float *colscale, const float *bias,
                       float *c, long ldc, int8_t *pack) {
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)rowscale, (void)rowzero, (void)colscale,
        (void)bias, (void)c, (void)ldc, (void)pack;
}

#endif

/// The same arithmetic in portable C, exact like the VNNI kernel (integer sums do not depend on their order), so a
/// CPU without VNNI — or a test — gets bit-identical results, only slower.
void amused_igemm_u8s8_portable(long m, long n, long k, const uint8_t *a, long lda, const int8_t *b, long ldb,
                                const float *rowscale, const int32_t *rowzero, const float *colscale,
                                const float *bias, float *c, long ldc) {
    for (long i = 0; i < m; i++) {
        for (long j = 0; j < n; j++) {
            int32_t dot = 0;
            for (long p = 0; p < k; p++) dot += ((int32_t)a[i * lda + p] - rowzero[i]) * (int32_t)b[j * ldb + p];
            float v = (float)dot * rowscale[i] * colscale[j];
            c[i * ldc + j] = bias ? v + bias[j] : v;
        }
    }
}

/// Every platform quantizes activations the same way (the AVX-512 loop above is bit-identical to this one).
void amused_quantize_rows_u8(long m, long k, const float *x, long ldx, uint8_t *q, long ldq, float *scale,
                             int32_t *zero) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    if (amused_igemm_cpu_supported()) {
        quantize_rows_avx512(m, k, x, ldx, q, ldq, scale, zero);
        return;
    }
#endif
    amused_quantize_rows_u8_portable(m, k, x, ldx, q, ldq, scale, zero);
}

void amused_quantize_rows_u8_portable(long m, long k, const float *x, long ldx, uint8_t *q, long ldq, float *scale,
                                      int32_t *zero) {
    for (long i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        float lo = 0, hi = 0;
        widen_range(row, 0, k, &lo, &hi);
        float s;
        int32_t z;
        row_range(lo, hi, &s, &z);
        uint8_t *out = q + i * ldq;
        quantize_span(row, 0, k, 1.0f / s, (float)z, out);
        pad_row(out, k, ldq, z);
        scale[i] = s;
        zero[i] = z;
    }
}

// bfloat16 products with AVX512_BF16: weights stored as bfloat16 [n, k] (the bundle's bf16 scheme) times activations
// rounded to bfloat16 per call (nearest even, as VCVTNE2PS2BF16 does), float32 accumulation by VDPBF16PS (pairs of
// products, denormal inputs read as zero). The same panel layout and 8×32 tile as the int8 kernel, with pairs of
// depth instead of quadruples.

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))

#define BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

int amused_bf16gemm_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512bf16")
               ? 1
               : 0;
}

BF16 static void kernel_bf16(long mr, long nr, long k2, const uint16_t *a, long lda, const uint16_t *panel,
                             const float *bias, float *c, long ldc) {
    __m512 acc0[IMR], acc1[IMR];
    for (int r = 0; r < IMR; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    if (mr == IMR) {
        for (long q = 0; q < k2; q++) {
            __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + q * 64);
            __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + q * 64 + 32);
#pragma GCC unroll 8
            for (int r = 0; r < IMR; r++) {
                __m512bh x = (__m512bh)_mm512_set1_epi32(word_at(a + r * lda + 2 * q));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], x, w0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], x, w1);
            }
        }
    } else {
        for (long q = 0; q < k2; q++) {
            __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + q * 64);
            __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + q * 64 + 32);
            for (long r = 0; r < mr; r++) {
                __m512bh x = (__m512bh)_mm512_set1_epi32(word_at(a + r * lda + 2 * q));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], x, w0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], x, w1);
            }
        }
    }
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr <= 16 ? 0 : nr >= 32 ? 0xffff : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (long r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, _mm512_add_ps(acc0[r], b0));
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, _mm512_add_ps(acc1[r], b1));
    }
}

BF16 void amused_bf16_rows(long m, long k, const float *x, long ldx, uint16_t *out, long ldo) {
    for (long i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        uint16_t *dst = out + i * ldo;
        long p = 0;
        for (; p + 32 <= k; p += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + p + 16), _mm512_loadu_ps(row + p));
            _mm512_storeu_si512(dst + p, (__m512i)v);
        }
        if (p < k) {
            __mmask16 lo = (__mmask16)(k - p >= 16 ? 0xffff : (1u << (k - p)) - 1);
            __mmask16 hi = (__mmask16)(k - p <= 16 ? 0 : (1u << (k - p - 16)) - 1);
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, row + p + 16), _mm512_maskz_loadu_ps(lo, row + p));
            _mm512_mask_storeu_epi16(dst + p, ((__mmask32)hi << 16) | lo, (__m512i)v);
        }
        if (k % 2) dst[k] = 0;  // the kernel reads pairs
    }
}

BF16 void amused_bf16gemm(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b, long ldb,
                          const float *bias, float *c, long ldc, uint16_t *pack) {
    long k2 = (k + 1) / 2;
    for (long j = 0; j < n; j += INR) {
        long nr = n - j < INR ? n - j : INR;
        pack_words(nr, 2 * k, (const uint8_t *)(b + j * ldb), 2 * ldb, (uint32_t *)pack);
        for (long i = 0; i < m; i += IMR) {
            long mr = m - i < IMR ? m - i : IMR;
            kernel_bf16(mr, nr, k2, a + i * lda, lda, pack, bias ? bias + j : 0, c + i * ldc + j, ldc);
        }
    }
}

#else

int amused_bf16gemm_cpu_supported(void) { return 0; }
void amused_bf16_rows(long m, long k, const float *x, long ldx, uint16_t *out, long ldo) {
    (void)m, (void)k, (void)x, (void)ldx, (void)out, (void)ldo;
}
void amused_bf16gemm(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b, long ldb,
                     const float *bias, float *c, long ldc, uint16_t *pack) {
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)bias, (void)c, (void)ldc, (void)pack;
}

#endif
