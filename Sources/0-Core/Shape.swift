// Shapes and the checked arithmetic every size read from a file goes through.

/// Checked size arithmetic: every size read from a file is combined through these, never with bare `*`.
public enum SizeMath {
    /// The product of `dims`, or nil when a dimension is negative or the product of the non-zero dimensions does not
    /// fit in an `Int`. Zeros are set aside first, so a shape this accepts can be multiplied in any order, and any
    /// subset of it too, without overflow: `[0, 2^61, 2^61]` is refused although its product is 0, because code that
    /// multiplies the last two first (a reversed GGUF shape, a matrix's columns) would trap.
    public static func product(_ dims: [Int]) -> Int? {
        var total = 1
        var hasZero = false
        for d in dims {
            guard d >= 0 else { return nil }
            if d == 0 {
                hasZero = true
                continue
            }
            let (p, overflow) = total.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            total = p
        }
        return hasZero ? 0 : total
    }

    /// Bytes `count` elements of `dtype` take, or nil on overflow or when packed elements do not fill whole bytes.
    public static func byteCount(elements count: Int, dtype: DType) -> Int? {
        let (bits, overflow) = count.multipliedReportingOverflow(by: dtype.bitWidth)
        guard !overflow, bits % 8 == 0 else { return nil }
        return bits / 8
    }

    /// Bytes a contiguous tensor of `shape` and `dtype` takes, or nil when `product(shape)` refuses it, when the
    /// non-zero dimensions' bits overflow (so every sub-shape's byte count fits too), or when packed elements do not
    /// fill whole bytes.
    public static func byteCount(shape: [Int], dtype: DType) -> Int? {
        guard let count = product(shape), let nonZero = product(shape.filter { $0 != 0 }),
            byteCount(elements: nonZero, dtype: dtype) != nil
        else { return nil }
        return byteCount(elements: count, dtype: dtype)
    }

    /// `a + b`, or nil on overflow.
    public static func add(_ a: Int, _ b: Int) -> Int? {
        let (s, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : s
    }
}

/// Row-major (C order) strides, in elements, for `shape`.
public func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i] = acc
        acc = acc &* Swift.max(shape[i], 1)
    }
    return strides
}

/// Formats a shape the way PyTorch prints it in the key lists: `[768, 1024]`.
public func describeShape(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
