#ifndef AMUSED_GEMM_H
#define AMUSED_GEMM_H

#include <stdint.h>

/// 1 when products should go to `amused_sgemm` by default: an x86-64 CPU with AVX-512F, in an optimised build (the
/// kernel is written with intrinsics, which run about 30 times slower unoptimised than BLAS does; debug builds
/// therefore use BLAS, and the tests call the kernel directly). On AVX2-only CPUs the AVX2 kernel is opt-in
/// (`AMUSED_GEMM=avx2`): in the model it measured level with OpenBLAS's AVX2 kernels on Zen 3 and Zen 4, not faster.
int amused_sgemm_available(void);

/// 1 when the CPU has AVX-512F, or AVX2 and FMA, whatever the build; lets tests run the kernel in a debug build.
int amused_sgemm_cpu_supported(void);

/// The register width of the kernel `amused_sgemm` runs on this CPU: 512 (AVX-512F: 12×32 tile), 256 (AVX2 and FMA:
/// 6×16 tile) or 0 (neither; BLAS does the products).
int amused_sgemm_width(void);

/// `amused_sgemm` with the kernel of the given width (512 or 256; the CPU must have it): for tests, benchmarks and
/// `AMUSED_GEMM=avx2`. Returns -1 for another width.
int amused_sgemm_with(int width, int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                      long lda, const float *b, long ldb, float beta, float *c, long ldc);

/// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major, single-threaded, with an AVX-512 micro-kernel (12×32
/// register tile; 6×16 on AVX2-only CPUs) over packed panels. op(A) is A (m×k, row stride lda) or, with trans_a, the
/// transpose of A stored k×m; op(B) is B (k×n) or, with trans_b, the transpose of B stored n×k (a PyTorch Linear
/// weight). With beta == 0, C is never read. Returns 0, or -1 when its packing buffers could not be allocated (nothing was written; the caller
/// falls back to BLAS). Call only when `amused_sgemm_cpu_supported()` is 1.
int amused_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                 const float *b, long ldb, float beta, float *c, long ldc);

/// The calling core's peak float32 FMA rate in GFLOP/s, measured: twelve independent FMA chains for `iterations`
/// rounds (zmm with AVX-512F, else ymm with FMA; 0 on other CPUs or for iterations ≤ 0). 10^8 rounds take about half
/// a second in any build (the loops are assembly: Sources/C/CGemm/peak.c).
double amused_fma_peak_gflops(long iterations);

/// 1 when the CPU has AVX-512 VNNI (with F and BW): `amused_igemm_u8s8` may be called.
int amused_igemm_cpu_supported(void);

/// C[m×n] = rowscale[i] · colscale[j] · Σ_p (a[i,p] − rowzero[i])·b[j,p] + bias[j] (bias may be NULL): A holds
/// activations quantized by `amused_quantize_rows_u8` (m×k bytes, row stride lda, readable up to k rounded up to 4),
/// B int8 weights stored n×k (a PyTorch Linear weight, row stride ldb). `pack` is scratch of 32 · 4·⌈k/4⌉ bytes.
/// Single-threaded; exact int32 accumulation (|Σ| < 2^31 for k < 66 000). Call only when
/// `amused_igemm_cpu_supported()` is 1.
void amused_igemm_u8s8(long m, long n, long k, const uint8_t *a, long lda, const int8_t *b, long ldb,
                       const float *rowscale, const int32_t *rowzero, const float *colscale, const float *bias,
                       float *c, long ldc, int8_t *pack);

/// 1 when the CPU has AVX2: `amused_quantize_rows_u16` and `amused_igemm_u16s8_avx2` may be called.
int amused_igemm_avx2_cpu_supported(void);

/// `amused_quantize_rows_u8` with AVX2, bit-identical, each level written as 16 bits (row stride ldo ≥ 2·⌈k/2⌉; an odd
/// row's padding element is set to its zero point) for `amused_igemm_u16s8_avx2`. Requires
/// `amused_igemm_avx2_cpu_supported()`.
void amused_quantize_rows_u16(long m, long k, const float *x, long ldx, uint16_t *out, long ldo, float *scale,
                              int32_t *zero);

/// `amused_igemm_u8s8` on AVX2 without VNNI, bit-identical: A the rows from `amused_quantize_rows_u16` (row stride lda
/// in elements, each readable up to 2·⌈k/2⌉), products by VPMADDWD on 16-bit pairs, exact int32 accumulation (|Σ| <
/// 2^31 for k < 66 000). `pack` is scratch of 32 · ⌈k/2⌉ int16. Single-threaded. Requires
/// `amused_igemm_avx2_cpu_supported()`.
void amused_igemm_u16s8_avx2(long m, long n, long k, const uint16_t *a, long lda, const int8_t *b, long ldb,
                             const float *rowscale, const int32_t *rowzero, const float *colscale, const float *bias,
                             float *c, long ldc, int16_t *pack);

/// The calling core's int16 multiply-add rate in GOP/s, measured: twelve independent VPMADDWD + VPADDD chains for
/// `iterations` rounds (0 without AVX2 or for iterations ≤ 0) — the AVX2 int8 path's ceiling, beside
/// `amused_fma_peak_gflops`.
double amused_int16_peak_gops(long iterations);

/// `amused_igemm_u8s8` in portable C with bit-identical results: for CPUs without VNNI and tests.
void amused_igemm_u8s8_portable(long m, long n, long k, const uint8_t *a, long lda, const int8_t *b, long ldb,
                                const float *rowscale, const int32_t *rowzero, const float *colscale,
                                const float *bias, float *c, long ldc);

/// Quantizes m rows of x (k values, row stride ldx) to bytes, asymmetrically per row: with lo = min(0, min x[i,·])
/// and hi = max(0, max x[i,·]), scale[i] = (hi − lo) / 255 (1 when that is below 1e-30 or infinite), zero[i] =
/// round(−lo / scale[i]), q[i,p] = clamp(round(x[i,p] / scale[i]) + zero[i], 0, 255) (NaN → zero[i]); bytes from k to
/// 4·⌈k/4⌉ (within ldq) are set to zero[i]. Rounding is to nearest even; the AVX-512 path is bit-identical.
void amused_quantize_rows_u8(long m, long k, const float *x, long ldx, uint8_t *q, long ldq, float *scale,
                             int32_t *zero);

/// `amused_quantize_rows_u8` without the AVX-512 path (what CPUs without AVX-512 run; for tests).
void amused_quantize_rows_u8_portable(long m, long k, const float *x, long ldx, uint8_t *q, long ldq, float *scale,
                                      int32_t *zero);

/// 1 when the CPU has AVX512_BF16 (with F and BW): `amused_bf16_rows` and `amused_bf16gemm` may be called.
int amused_bf16gemm_cpu_supported(void);

/// Rounds m rows of x (k floats, row stride ldx) to bfloat16, nearest even (NaN stays NaN), into out (row stride ldo
/// ≥ k rounded up to 2; a padding element is zeroed). Requires `amused_bf16gemm_cpu_supported()`.
void amused_bf16_rows(long m, long k, const float *x, long ldx, uint16_t *out, long ldo);

/// C[m×n] = Σ_p a[i,p]·b[j,p] + bias[j] (bias may be NULL) with A bfloat16 m×k (from `amused_bf16_rows`, row stride
/// lda) and B bfloat16 n×k (a Linear weight, row stride ldb), float32 accumulation by VDPBF16PS (pairs of products,
/// denormal inputs as zero). `pack` is scratch of 32 · 2·⌈k/2⌉ values. Single-threaded. Requires
/// `amused_bf16gemm_cpu_supported()`.
void amused_bf16gemm(long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b, long ldb,
                     const float *bias, float *c, long ldc, uint16_t *pack);

/// The functions `amused_apply` evaluates (FastMath.Function's cases).
enum { AMUSED_GELU = 0, AMUSED_SILU = 1, AMUSED_QUICK_GELU = 2, AMUSED_EXP_SHIFTED = 3 };

/// 1 when the CPU has AVX-512F or AVX2: `amused_apply` and `amused_softmax_row` may be called.
int amused_elementwise_cpu_supported(void);

/// The build of the element-wise passes this CPU runs: 512 (AVX-512F), 256 (AVX2) or 0 (neither).
int amused_elementwise_width(void);

/// `amused_apply` through the build of the given width (512 or 256; the CPU must have it), for tests: an AVX-512 CPU
/// can check the AVX2 build too. Returns 0, or -1 (nothing done) for another width.
int amused_apply_with(int width, int function, float shift, float *p, long count);

/// `amused_softmax_row` through the build of the given width (512 or 256; the CPU must have it), for tests. Returns
/// 0, or -1 (nothing done) for another width.
int amused_softmax_row_with(int width, float *row, long dim);

/// p[i] = f(p[i]) for i < count, sixteen lanes at a time (f: exact GELU, SiLU, quick-GELU, or e^(x − shift)),
/// bit-identical to FastMath.apply's Swift loop, in this CPU's build. Requires `amused_elementwise_cpu_supported()`.
void amused_apply(int function, float shift, float *p, long count);

/// Softmax of one row in place: the maximum (NaN ignored), e^(x − max), their sum over sixteen running sums added
/// pairwise, then each value times 1/sum; bit-identical to Kernels.softmaxRowPortable. Requires
/// `amused_elementwise_cpu_supported()`.
void amused_softmax_row(float *row, long dim);

#endif
