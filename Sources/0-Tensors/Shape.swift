// Shapes and the checked arithmetic every size read from a file goes through.

/// Checked size arithmetic: every size read from a file is combined through these, never with bare `*`.
public enum SizeMath {
    /// The product of `dims`, or nil when it does not fit in a non-negative `Int`.
    public static func product(_ dims: [Int]) -> Int? {
        var total = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (p, overflow) = total.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            total = p
        }
        return total
    }

    /// Bytes `count` elements of `dtype` take, or nil on overflow or when packed elements do not fill whole bytes.
    public static func byteCount(elements count: Int, dtype: DType) -> Int? {
        let (bits, overflow) = count.multipliedReportingOverflow(by: dtype.bitWidth)
        guard !overflow, bits % 8 == 0 else { return nil }
        return bits / 8
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
