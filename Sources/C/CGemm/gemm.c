// A single-threaded float32 GEMM with an AVX-512 micro-kernel, in the BLIS layout (Goto's algorithm): B is packed
// into KC×NR panels that stay in L1, A into MR×KC panels from a block that stays in L2, and a 12×32 tile of C is
// accumulated in 24 zmm registers. Debian's OpenBLAS is pinned here to its AVX2 (Haswell) kernels
// (OPENBLAS_CORETYPE), which reach about 120 GFLOP/s per core at the model's shapes; this kernel reaches 180–220 on
// the same core. The same algorithm with a 6×16 tile in 12 ymm accumulators runs on CPUs with AVX2 and FMA (Zen 3,
// most client CPUs) when asked for (`amused_sgemm_with(256, …)`, AMUSED_GEMM=avx2): it measured level with
// OpenBLAS's AVX2 kernels — on a Zen 4 running AVX2 code and on a Zen 3, in the model (interleaved A/B, Zen 3:
// transformer forward 2.84 s against OpenBLAS's 2.81, a generation 1.9% slower; docs/results/
// gemm-avx2-vs-openblas-zen3-20261203.txt) — so BLAS stays their default. Other CPUs and platforms keep BLAS
// (AmusedKernels decides; see BLAS.swift).

#include "amused_gemm.h"

#include <stdlib.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#include <pthread.h>

#include "transpose8.h"

enum {
    MR = 12,   // rows of the register tile: 12 × 2 accumulators + 2 B vectors + 1 broadcast fit in 32 zmm
    NR = 32,   // columns: two zmm
    KC = 256,  // depth of a panel: a KC×NR panel of B is 32 KiB, within the 48 KiB L1
    MC = 192,  // rows of A packed at once: 192 KiB, within a 1 MiB L2 together with the B block
    NC = 512,  // columns of B packed at once: 512 KiB (measured: larger blocks fall out of L2 and lose 15%)
};

struct buffers { float *a, *b; };

static pthread_key_t buffers_key;
static pthread_once_t buffers_once = PTHREAD_ONCE_INIT;

static void buffers_free(void *p) {
    struct buffers *bufs = p;
    free(bufs->a);
    free(bufs->b);
    free(bufs);
}

static void buffers_init(void) { pthread_key_create(&buffers_key, buffers_free); }

/// Packing buffers for the calling thread, allocated on its first product and freed when the thread exits.
static struct buffers *thread_buffers(void) {
    pthread_once(&buffers_once, buffers_init);
    struct buffers *bufs = pthread_getspecific(buffers_key);
    if (bufs) return bufs;
    bufs = calloc(1, sizeof *bufs);
    if (!bufs) return NULL;
    if (posix_memalign((void **)&bufs->a, 64, sizeof(float) * MC * KC) != 0 ||
        posix_memalign((void **)&bufs->b, 64, sizeof(float) * NC * KC) != 0 ||
        pthread_setspecific(buffers_key, bufs) != 0) {
        free(bufs->a);
        free(bufs->b);
        free(bufs);
        return NULL;
    }
    return bufs;
}

int amused_sgemm_width(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 512;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 256 : 0;
}

int amused_sgemm_cpu_supported(void) { return amused_sgemm_width() != 0; }

int amused_sgemm_available(void) {
#if defined(__OPTIMIZE__)
    return amused_sgemm_width() == 512;
#else
    return 0;
#endif
}

/// C tile (mr ≤ MR rows, nr ≤ NR columns) = alpha · Σ_p a[p]·b[p] + beta · C, from packed panels; rows and columns
/// past mr/nr are computed on the zero padding and never stored.
__attribute__((target("avx512f")))
static void kernel(long kc, const float *restrict a, const float *restrict b, float *c, long ldc, long mr, long nr,
                   float alpha, float beta) {
    __m512 x[MR], y[MR];
    for (int r = 0; r < MR; r++) {
        x[r] = _mm512_setzero_ps();
        y[r] = _mm512_setzero_ps();
    }
    for (long p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
            x[r] = _mm512_fmadd_ps(ar, b0, x[r]);
            y[r] = _mm512_fmadd_ps(ar, b1, y[r]);
        }
        a += MR;
        b += NR;
    }
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {  // unrolled so the accumulators stay in registers
        if (r >= mr) break;
        float *row = c + r * ldc;
        __m512 u = _mm512_mul_ps(x[r], va), v = _mm512_mul_ps(y[r], va);
        if (beta != 0) {  // beta == 0 must not read C: it may hold anything, NaN included (BLAS semantics)
            u = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, row), vb, u);
            v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, row + 16), vb, v);
        }
        _mm512_mask_storeu_ps(row, m0, u);
        _mm512_mask_storeu_ps(row + 16, m1, v);
    }
}

/// Transposes the 16×16 block held in r[0..15] (row i in r[i]) in place: afterwards r[j] holds column j.
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    // Now each 128-bit lane L of r[4g + s] holds column 4L + s of rows 4g … 4g+3; two rounds of 128-bit lane
    // shuffles gather, for every column, its four pieces from the four row groups.
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 8) {
#pragma GCC unroll 16
        for (int s = 0; s < 4; s++) {
            t[i + s] = _mm512_shuffle_f32x4(r[i + s], r[i + 4 + s], 0x88);
            t[i + 4 + s] = _mm512_shuffle_f32x4(r[i + s], r[i + 4 + s], 0xDD);
        }
    }
#pragma GCC unroll 16
    for (int s = 0; s < 8; s++) {
        r[s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88);
        r[8 + s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xDD);
    }
}

/// dst[0..<count] = src[0..<count], then zeros up to `width`: one depth step of a panel whose source run is contiguous.
static inline void copy_padded(float *dst, const float *src, long count, long width) {
    long i = 0;
    for (; i < count; i++) dst[i] = src[i];
    for (; i < width; i++) dst[i] = 0;
}

/// Rows [i0, i0+mc) × depth [p0, p0+kc) of op(A) as MR-row panels, each stored depth-major (MR values per step),
/// the last one padded with zeros. Row-major A is transposed 16 depths at a time in registers.
__attribute__((target("avx512f")))
static void pack_a(int trans, const float *a, long lda, long i0, long mc, long p0, long kc, float *dst) {
    for (long ir = 0; ir < mc; ir += MR) {
        long mr = mc - ir < MR ? mc - ir : MR;
        if (!trans) {
            long p = 0;
            if (mr == MR) {  // a whole panel: 12 rows and 4 of zeros, transposed 16 depths at a time
                const float *src = a + (i0 + ir) * lda + p0;
                for (; p + 16 <= kc; p += 16) {
                    __m512 r[16];
#pragma GCC unroll 16
                    for (int q = 0; q < 16; q++) r[q] = q < MR ? _mm512_loadu_ps(src + q * lda + p) : _mm512_setzero_ps();
                    transpose16(r);
#pragma GCC unroll 16
                    for (int q = 0; q < 16; q++) _mm512_mask_storeu_ps(dst + (p + q) * MR, (1u << MR) - 1, r[q]);
                }
            }
            for (; p < kc; p++) {
                long r = 0;
                for (; r < mr; r++) dst[p * MR + r] = a[(i0 + ir + r) * lda + p0 + p];
                for (; r < MR; r++) dst[p * MR + r] = 0;
            }
        } else {
            for (long p = 0; p < kc; p++) copy_padded(dst + p * MR, a + (p0 + p) * lda + i0 + ir, mr, MR);
        }
        dst += MR * kc;
    }
}

/// Depth [p0, p0+kc) × columns [j0, j0+nc) of op(B) as NR-column panels, each stored depth-major (NR values per
/// step), the last one padded with zeros. A transposed B (a Linear weight) is transposed 16×16 in registers.
__attribute__((target("avx512f")))
static void pack_b(int trans, const float *b, long ldb, long j0, long nc, long p0, long kc, float *dst) {
    for (long jr = 0; jr < nc; jr += NR) {
        long nr = nc - jr < NR ? nc - jr : NR;
        if (trans) {
            for (long half = 0; half < NR; half += 16) {
                long p = 0;
                if (nr == NR) {  // a whole panel: 16 rows of the weight at a time, transposed 16 depths at a time
                    const float *src = b + (j0 + jr + half) * ldb + p0;
                    for (; p + 16 <= kc; p += 16) {
                        __m512 r[16];
#pragma GCC unroll 16
                        for (int q = 0; q < 16; q++) r[q] = _mm512_loadu_ps(src + q * ldb + p);
                        transpose16(r);
#pragma GCC unroll 16
                        for (int q = 0; q < 16; q++) _mm512_store_ps(dst + (p + q) * NR + half, r[q]);
                    }
                }
                for (; p < kc; p++)
                    for (long j = half; j < half + 16; j++)
                        dst[p * NR + j] = j < nr ? b[(j0 + jr + j) * ldb + p0 + p] : 0;
            }
        } else {
            for (long p = 0; p < kc; p++) copy_padded(dst + p * NR, b + (p0 + p) * ldb + j0 + jr, nr, NR);
        }
        dst += NR * kc;
    }
}

// The AVX2 + FMA variant: the same blocking with a 6×16 register tile (12 ymm accumulators, 2 B vectors and a
// broadcast within the 16 ymm registers AVX2 has), 8×8 transposes in the packers.

enum {
    MR2 = 6,   // rows of the AVX2 register tile
    NR2 = 16,  // columns: two ymm
};

/// The mask of the first `count` (0…8) lanes, for AVX2's masked loads and stores.
__attribute__((target("avx2,fma"))) static inline __m256i lanes_mask(long count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// C tile (mr ≤ 6 rows, nr ≤ 16 columns) = alpha · Σ_p a[p]·b[p] + beta · C, as `kernel` does with zmm.
__attribute__((target("avx2,fma")))
static void kernel_avx2(long kc, const float *restrict a, const float *restrict b, float *c, long ldc, long mr,
                        long nr, float alpha, float beta) {
    __m256 x[MR2], y[MR2];
    for (int r = 0; r < MR2; r++) {
        x[r] = _mm256_setzero_ps();
        y[r] = _mm256_setzero_ps();
    }
    for (long p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int r = 0; r < MR2; r++) {
            __m256 ar = _mm256_broadcast_ss(a + r);
            x[r] = _mm256_fmadd_ps(ar, b0, x[r]);
            y[r] = _mm256_fmadd_ps(ar, b1, y[r]);
        }
        a += MR2;
        b += NR2;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (nr == NR2) {  // whole rows: plain loads and stores (AMD runs VMASKMOVPS stores as slow microcode)
#pragma GCC unroll 6
        for (int r = 0; r < MR2; r++) {
            if (r >= mr) break;
            float *row = c + r * ldc;
            __m256 u = _mm256_mul_ps(x[r], va), v = _mm256_mul_ps(y[r], va);
            if (beta != 0) {  // beta == 0 must not read C (BLAS semantics)
                u = _mm256_fmadd_ps(_mm256_loadu_ps(row), vb, u);
                v = _mm256_fmadd_ps(_mm256_loadu_ps(row + 8), vb, v);
            }
            _mm256_storeu_ps(row, u);
            _mm256_storeu_ps(row + 8, v);
        }
        return;
    }
    __m256i m0 = lanes_mask(nr >= 8 ? 8 : nr), m1 = lanes_mask(nr > 8 ? nr - 8 : 0);
#pragma GCC unroll 6
    for (int r = 0; r < MR2; r++) {
        if (r >= mr) break;
        float *row = c + r * ldc;
        __m256 u = _mm256_mul_ps(x[r], va), v = _mm256_mul_ps(y[r], va);
        if (beta != 0) {
            u = _mm256_fmadd_ps(_mm256_maskload_ps(row, m0), vb, u);
            v = _mm256_fmadd_ps(_mm256_maskload_ps(row + 8, m1), vb, v);
        }
        _mm256_maskstore_ps(row, m0, u);
        _mm256_maskstore_ps(row + 8, m1, v);
    }
}

/// `pack_a` for the 6-row tile: row-major A transposed 8 depths at a time (6 rows and 2 of zeros).
__attribute__((target("avx2,fma")))
static void pack_a_avx2(int trans, const float *a, long lda, long i0, long mc, long p0, long kc, float *dst) {
    __m256i six = lanes_mask(MR2);
    for (long ir = 0; ir < mc; ir += MR2) {
        long mr = mc - ir < MR2 ? mc - ir : MR2;
        if (!trans) {
            long p = 0;
            if (mr == MR2) {
                const float *src = a + (i0 + ir) * lda + p0;
                for (; p + 8 <= kc; p += 8) {
                    __m256 r[8];
                    for (int q = 0; q < 8; q++) r[q] = q < MR2 ? _mm256_loadu_ps(src + q * lda + p) : _mm256_setzero_ps();
                    transpose8(r);
                    // Eight lanes stored where six belong: each store's two extra lanes are overwritten by the
                    // next; only the last is masked (it would spill past the panel).
                    for (int q = 0; q < 7; q++) _mm256_storeu_ps(dst + (p + q) * MR2, r[q]);
                    _mm256_maskstore_ps(dst + (p + 7) * MR2, six, r[7]);
                }
            }
            for (; p < kc; p++) {
                long r = 0;
                for (; r < mr; r++) dst[p * MR2 + r] = a[(i0 + ir + r) * lda + p0 + p];
                for (; r < MR2; r++) dst[p * MR2 + r] = 0;
            }
        } else {
            for (long p = 0; p < kc; p++) copy_padded(dst + p * MR2, a + (p0 + p) * lda + i0 + ir, mr, MR2);
        }
        dst += MR2 * kc;
    }
}

/// `pack_b` for the 16-column tile: a transposed B (a Linear weight) transposed 8×8 in registers.
__attribute__((target("avx2,fma")))
static void pack_b_avx2(int trans, const float *b, long ldb, long j0, long nc, long p0, long kc, float *dst) {
    for (long jr = 0; jr < nc; jr += NR2) {
        long nr = nc - jr < NR2 ? nc - jr : NR2;
        if (trans) {
            for (long half = 0; half < NR2; half += 8) {
                long p = 0;
                if (nr == NR2) {
                    const float *src = b + (j0 + jr + half) * ldb + p0;
                    for (; p + 8 <= kc; p += 8) {
                        __m256 r[8];
                        for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(src + q * ldb + p);
                        transpose8(r);
                        for (int q = 0; q < 8; q++) _mm256_store_ps(dst + (p + q) * NR2 + half, r[q]);
                    }
                }
                for (; p < kc; p++)
                    for (long j = half; j < half + 8; j++)
                        dst[p * NR2 + j] = j < nr ? b[(j0 + jr + j) * ldb + p0 + p] : 0;
            }
        } else {
            for (long p = 0; p < kc; p++) copy_padded(dst + p * NR2, b + (p0 + p) * ldb + j0 + jr, nr, NR2);
        }
        dst += NR2 * kc;
    }
}

/// One register tile's kernel and its packers.
struct isa {
    long mr, nr;
    void (*pack_a)(int, const float *, long, long, long, long, long, float *);
    void (*pack_b)(int, const float *, long, long, long, long, long, float *);
    void (*kernel)(long, const float *restrict, const float *restrict, float *, long, long, long, float, float);
};

static const struct isa isa512 = {MR, NR, pack_a, pack_b, kernel};
static const struct isa isa256 = {MR2, NR2, pack_a_avx2, pack_b_avx2, kernel_avx2};

int amused_sgemm_with(int width, int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                      long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    const struct isa *t = width == 512 ? &isa512 : width == 256 ? &isa256 : 0;
    if (!t) return -1;
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {  // an empty sum: C = beta · C
        for (long i = 0; i < m; i++)
            for (long j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return 0;
    }
    struct buffers *bufs = thread_buffers();
    if (!bufs) return -1;
    for (long jc = 0; jc < n; jc += NC) {
        long nc = n - jc < NC ? n - jc : NC;
        for (long pc = 0; pc < k; pc += KC) {
            long kc = k - pc < KC ? k - pc : KC;
            t->pack_b(trans_b, b, ldb, jc, nc, pc, kc, bufs->b);
            float panel_beta = pc == 0 ? beta : 1;  // later depth blocks add to what the first one stored
            for (long ic = 0; ic < m; ic += MC) {
                long mc = m - ic < MC ? m - ic : MC;
                t->pack_a(trans_a, a, lda, ic, mc, pc, kc, bufs->a);
                for (long jr = 0; jr < nc; jr += t->nr)
                    for (long ir = 0; ir < mc; ir += t->mr)
                        t->kernel(kc, bufs->a + ir * kc, bufs->b + jr * kc, c + (ic + ir) * ldc + jc + jr, ldc,
                                  mc - ir < t->mr ? mc - ir : t->mr, nc - jr < t->nr ? nc - jr : t->nr, alpha,
                                  panel_beta);
            }
        }
    }
    return 0;
}

int amused_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                 const float *b, long ldb, float beta, float *c, long ldc) {
    return amused_sgemm_with(amused_sgemm_width(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#else  // not x86-64: BLAS does every product

int amused_sgemm_width(void) { return 0; }
int amused_sgemm_cpu_supported(void) { return 0; }
int amused_sgemm_available(void) { return 0; }
int amused_sgemm_with(int width, int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                      long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    (void)width;
    return amused_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
int amused_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                 const float *b, long ldb, float beta, float *c, long ldc) {
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb;
    (void)beta; (void)c; (void)ldc;
    return -1;
}

#endif
