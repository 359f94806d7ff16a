// The calling core's peak rates, measured: what a benchmark's GFLOP/s (and the AVX2 int8 path's GOP/s) are a
// fraction of. Each is twelve independent dependency chains of one instruction kind, timed over `iterations` rounds.
//
// The loops are written in assembly so that every build runs the same instructions: compiled from intrinsics without
// optimisation (a debug build, which the tests use), each operation went through memory and 3 × 10^8 rounds took
// about 80 s instead of half a second — and reported a fraction of the real peak.

#include "amused_gemm.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <time.h>

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Accumulators are registers 0–11; 12 and 13 hold the operands, 13–15 the int16 products. Starting from zero, the
// float chains acc = 0.999999 · acc + 1e-7 settle near 0.1: no subnormal ever slows them.
#define ZERO(i) "vxorps %%ymm" #i ", %%ymm" #i ", %%ymm" #i "\n\t"
#define ZERO12 ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7) ZERO(8) ZERO(9) ZERO(10) ZERO(11)
#define FMA(r, i) "vfmadd213ps %%" r "13, %%" r "12, %%" r #i "\n\t"
#define FMA12(r) FMA(r, 0) FMA(r, 1) FMA(r, 2) FMA(r, 3) FMA(r, 4) FMA(r, 5) \
                 FMA(r, 6) FMA(r, 7) FMA(r, 8) FMA(r, 9) FMA(r, 10) FMA(r, 11)
// acc_i += VPMADDWD(acc_i, 3): a multiply-add of 16-bit pairs into 32 bits, then the add the int8 kernel does.
#define MADD(i, t) "vpmaddwd %%ymm12, %%ymm" #i ", %%ymm" #t "\n\t" "vpaddd %%ymm" #t ", %%ymm" #i ", %%ymm" #i "\n\t"
#define MADD12 MADD(0, 13) MADD(1, 14) MADD(2, 15) MADD(3, 13) MADD(4, 14) MADD(5, 15) \
               MADD(6, 13) MADD(7, 14) MADD(8, 15) MADD(9, 13) MADD(10, 14) MADD(11, 15)
#define CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
                 "xmm12", "xmm13", "xmm14", "xmm15", "cc"

static const float fma_b = 0.999999f, fma_c = 1e-7f;
static const short madd_y = 3;

// The loop every measurement runs: zeroed accumulators, then `body` for %[n] (> 0) rounds.
#define ROUNDS(body) ZERO12 "1:\n\t" body "dec %[n]\n\t" "jnz 1b\n\t" "vzeroupper"

/// `iterations` (> 0) rounds of twelve FMAs on registers `r` ("ymm" or "zmm"), in a function for target `isa`.
#define FMA_CHAINS(name, isa, r)                                                                      \
    __attribute__((target(isa))) static void name(long iterations) {                                  \
        __asm__ volatile("vbroadcastss %[b], %%" r "12\n\t"                                           \
                         "vbroadcastss %[c], %%" r "13\n\t" ROUNDS(FMA12(r))                          \
                         : [n] "+r"(iterations)                                                        \
                         : [b] "m"(fma_b), [c] "m"(fma_c)                                              \
                         : CLOBBERS);                                                                  \
    }

FMA_CHAINS(fma_chains_zmm, "avx512f", "zmm")
FMA_CHAINS(fma_chains_ymm, "avx2,fma", "ymm")

/// `iterations` (> 0) rounds of twelve VPMADDWD + VPADDD pairs.
__attribute__((target("avx2"))) static void madd_chains_ymm(long iterations) {
    __asm__ volatile("vpbroadcastw %[y], %%ymm12\n\t" ROUNDS(MADD12)
                     : [n] "+r"(iterations)
                     : [y] "m"(madd_y)
                     : CLOBBERS);
}

double amused_fma_peak_gflops(long iterations) {
    __builtin_cpu_init();
    int zmm = __builtin_cpu_supports("avx512f"), ymm = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if ((!zmm && !ymm) || iterations <= 0) return 0;
    double t0 = now_seconds();
    if (zmm) fma_chains_zmm(iterations); else fma_chains_ymm(iterations);
    double seconds = now_seconds() - t0;
    return seconds > 0 ? (double)iterations * 12 * (zmm ? 16 : 8) * 2 / seconds / 1e9 : 0;
}

double amused_int16_peak_gops(long iterations) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || iterations <= 0) return 0;
    double t0 = now_seconds();
    madd_chains_ymm(iterations);
    double seconds = now_seconds() - t0;
    // Two operations per multiply-add, sixteen of them per VPMADDWD.
    return seconds > 0 ? (double)iterations * 12 * 32 / seconds / 1e9 : 0;
}

#else  // not x86-64: nothing to measure

double amused_fma_peak_gflops(long iterations) {
    (void)iterations;
    return 0;
}

double amused_int16_peak_gops(long iterations) {
    (void)iterations;
    return 0;
}

#endif
