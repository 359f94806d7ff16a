// The C allocator's settings for large activations. glibc serves blocks above its mmap threshold (at most 32 MiB by
// default) with fresh mappings and returns them on free, so every layer of the VQ decoder, whose activations are
// 33–134 MB at 256×256, paid page faults and kernel zero-filling for every buffer: a quarter of a decode. Raising the
// mmap and trim thresholds keeps those blocks in the heap and reuses them (peak RSS grows by one activation).

#if os(Linux)
import CAllocator
#endif

extension Kernels {
    /// Keeps large buffers in the heap between layers (Linux, glibc); a no-op elsewhere. Call once at start-up.
    public static func configureAllocator() {
        #if os(Linux)
        _ = mallopt(M_MMAP_THRESHOLD, 1 << 30)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }
}
