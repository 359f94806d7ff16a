// An 8×8 transpose of 32-bit lanes in ymm registers, shared by the AVX2 packers of gemm.c (floats) and igemm.c
// (pairs of 16-bit levels). Include only inside an x86-64 section that has included <immintrin.h>.

#ifndef AMUSED_TRANSPOSE8_H
#define AMUSED_TRANSPOSE8_H

/// Transposes the 8×8 block held in r[0..7] in place: afterwards r[j] holds column j.
__attribute__((target("avx2"), always_inline)) static inline void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

#endif
