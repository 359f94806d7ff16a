#ifndef AMUSED_GEMM_H
#define AMUSED_GEMM_H

/// 1 when `amused_sgemm` may be called on this machine: an x86-64 CPU with AVX-512F, in an optimised build (the
/// kernel is written with intrinsics, which run about 30 times slower unoptimised than BLAS does; debug builds
/// therefore use BLAS, and the tests call the kernel directly).
int amused_sgemm_available(void);

/// 1 when the CPU has AVX-512F, whatever the build; lets tests run the kernel in a debug build.
int amused_sgemm_cpu_supported(void);

/// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major, single-threaded, with an AVX-512 micro-kernel (12×32
/// register tile) over packed panels. op(A) is A (m×k, row stride lda) or, with trans_a, the transpose of A stored
/// k×m; op(B) is B (k×n) or, with trans_b, the transpose of B stored n×k (a PyTorch Linear weight). With beta == 0,
/// C is never read. Returns 0, or -1 when its packing buffers could not be allocated (nothing was written; the caller
/// falls back to BLAS). Call only when `amused_sgemm_cpu_supported()` is 1.
int amused_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a, long lda,
                 const float *b, long ldb, float beta, float *c, long ldc);

#endif
