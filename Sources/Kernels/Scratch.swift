// Reusable scratch memory for the large temporary buffers of convolutions: allocating tens of megabytes afresh for
// every layer costs page faults and zero-filling that show up as a tenth of a VQ decode.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small thread-safe pool of float buffers. A borrowed buffer belongs to the borrower until it is returned.
final class ScratchPool: @unchecked Sendable {
    static let shared = ScratchPool()

    private var free: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private var mutex = pthread_mutex_t()
    /// Buffers kept for reuse at most (the largest are released first beyond this).
    private let keep = 6

    private init() { pthread_mutex_init(&mutex, nil) }

    /// A buffer of at least `count` floats (contents undefined).
    func borrow(_ count: Int) -> UnsafeMutablePointer<Float> {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let i = free.indices.filter({ free[$0].capacity >= count }).min(by: { free[$0].capacity < free[$1].capacity }
        ) {
            return free.remove(at: i).pointer
        }
        return UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    }

    /// Returns a buffer obtained from `borrow` with its requested `count`.
    func giveBack(_ pointer: UnsafeMutablePointer<Float>, _ count: Int) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        free.append((pointer, max(count, 1)))
        if free.count > keep {
            free.sort { $0.capacity < $1.capacity }
            free.removeLast().pointer.deallocate()
        }
    }
}

extension Kernels {
    /// Runs `body` with a pooled buffer of at least `count` floats (contents undefined), returned to the pool after.
    public static func withScratch<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        let buffer = ScratchPool.shared.borrow(count)
        defer { ScratchPool.shared.giveBack(buffer, count) }
        return body(buffer)
    }
}
