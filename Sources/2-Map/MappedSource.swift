// Applying a name map: a TensorSource under canonical names (tensors computed lazily; renames stay zero-copy) and a
// ledger that accounts for every source tensor — mapped, renamed, transformed, dropped — or names the unmapped ones.

import AmusedCore
import AmusedRead

/// What happened to the source tensors.
public struct MapLedger: Sendable {
    /// One accounted-for group of tensors.
    public struct Entry: Sendable {
        /// How.
        public enum Kind: String, Sendable {
            /// Same name, same tensor.
            case unchanged
            /// New name, same tensor.
            case renamed
            /// Produced by an operation (concat, split, transpose).
            case transformed
            /// Not used, by a rule that says why.
            case dropped
        }

        /// Source names consumed.
        public let sources: [String]
        /// Canonical names produced.
        public let targets: [String]
        /// How.
        public let kind: Kind
        /// The operation (for transformed) or the reason (for dropped).
        public let detail: String?
    }

    /// The map applied.
    public let map: String
    /// Every consumed source tensor, grouped by rule application.
    public let entries: [Entry]
    /// Source tensors no rule consumed.
    public let unmapped: [String]

    /// Counts per kind, plus unmapped.
    public var counts: [String: Int] {
        var c: [String: Int] = [
            "unchanged": 0, "renamed": 0, "transformed": 0, "dropped": 0, "unmapped": unmapped.count,
        ]
        for e in entries { c[e.kind.rawValue, default: 0] += e.sources.count }
        return c
    }
}

/// A source seen through a name map.
public struct MappedSource: TensorSource {
    /// The source's path.
    public var path: String { source.path }
    /// The source's format.
    public var format: WeightFormat { source.format }
    /// Canonical tensors, in source order.
    public let infos: [TensorInfo]
    /// The accounting.
    public let ledger: MapLedger
    let source: any TensorSource
    let plans: [String: Plan]

    struct Plan: Sendable {
        let operation: MapRule.Operation
        let sources: [String]
        let axis: Int
        let part: Int
        let parts: Int
        var shape: [Int] = []
    }

    /// Applies `map` to `source`. `constants` are the map's named values (for example `last` = the index of the
    /// last VQ level). Unmapped source tensors are an error unless `allowUnmapped`.
    public init(
        _ source: any TensorSource, map: NameMap, constants: [String: Int] = [:],
        allowUnmapped: Bool = false
    ) throws(MapError) {
        var infoByName: [String: TensorInfo] = [:]
        for info in source.infos where infoByName.updateValue(info, forKey: info.name) != nil {
            throw MapError(info.name, "the source holds two tensors of this name")
        }
        var consumed = Set<String>()
        var entries: [MapLedger.Entry] = []
        var infos: [TensorInfo] = []
        var plans: [String: Plan] = [:]
        var secondary: [String] = []
        func produce(_ name: String, _ shape: [Int], _ dtype: DType, _ plan: Plan) throws(MapError) {
            guard plans[name] == nil else { throw MapError(name, "two source tensors map to this name") }
            plans[name] = plan
            guard let bytes = SizeMath.byteCount(shape: shape, dtype: dtype) else {
                throw MapError(name, "shape \(describeShape(shape)) of \(dtype.rawValue) overflows 64 bits")
            }
            do {
                infos.append(
                    try TensorInfo(
                        name: name, dtype: dtype, shape: shape, fileOffset: 0, byteCount: bytes,
                        path: source.path))
            } catch { throw MapError(name, error.message) }
        }
        outer: for info in source.infos where !consumed.contains(info.name) {
            for rule in map.rules {
                guard let bindings = rule.from[0].match(info.name) else {
                    if rule.operation == .concat, rule.from.dropFirst().contains(where: { $0.match(info.name) != nil })
                    {
                        secondary.append(info.name)
                        continue outer
                    }
                    continue
                }
                switch rule.operation {
                case .drop:
                    entries.append(.init(sources: [info.name], targets: [], kind: .dropped, detail: rule.reason))
                case .rename, .transpose:
                    let target = try rule.to[0].render(bindings, constants: constants)
                    var shape = info.shape
                    if rule.operation == .transpose {
                        guard shape.count == 2 else { throw MapError(info.name, "transpose needs a 2-D tensor") }
                        shape.reverse()
                    }
                    try produce(
                        target, shape, info.dtype,
                        Plan(
                            operation: rule.operation, sources: [info.name], axis: 0,
                            part: 0, parts: 1))
                    let kind: MapLedger.Entry.Kind =
                        rule.operation == .transpose
                        ? .transformed
                        : target == info.name ? .unchanged : .renamed
                    entries.append(
                        .init(
                            sources: [info.name], targets: [target], kind: kind,
                            detail: rule.operation == .transpose ? "transpose" : nil))
                case .concat:
                    let names = try rule.from.map { (t) throws(MapError) in try t.render(bindings, constants: constants)
                    }
                    var shape = info.shape
                    guard rule.axis >= 0, rule.axis < shape.count else {
                        throw MapError(info.name, "concat axis out of range")
                    }
                    shape[rule.axis] = 0
                    for n in names {
                        guard let other = infoByName[n], !consumed.contains(n) || n == info.name else {
                            throw MapError(
                                n,
                                "concat into \(try rule.to[0].render(bindings, constants: constants)) needs this tensor"
                            )
                        }
                        guard other.dtype == info.dtype, other.shape.count == info.shape.count,
                            zip(other.shape, info.shape).enumerated().allSatisfy({
                                $0.offset == rule.axis || $0.element.0 == $0.element.1
                            })
                        else {
                            throw MapError(
                                n,
                                "shape \(describeShape(other.shape)) cannot be concatenated with \(describeShape(info.shape))"
                            )
                        }
                        guard let sum = SizeMath.add(shape[rule.axis], other.shape[rule.axis]) else {
                            throw MapError(n, "concatenated size overflows 64 bits")
                        }
                        shape[rule.axis] = sum
                    }
                    let target = try rule.to[0].render(bindings, constants: constants)
                    try produce(
                        target, shape, info.dtype,
                        Plan(
                            operation: .concat, sources: names, axis: rule.axis,
                            part: 0, parts: 1))
                    consumed.formUnion(names)
                    entries.append(
                        .init(
                            sources: names, targets: [target], kind: .transformed,
                            detail: "concat along axis \(rule.axis)"))
                case .reshape, .squeeze:
                    let target = try rule.to[0].render(bindings, constants: constants)
                    let count = info.shape.reduce(1, *)
                    var shape: [Int]
                    let detail: String
                    if rule.operation == .reshape {
                        shape = rule.shape
                        // The map's shape is user data: its products are checked.
                        let known = SizeMath.product(shape.filter { $0 != -1 }) ?? 0
                        if let free = shape.firstIndex(of: -1), known > 0, count % known == 0 {
                            shape[free] = count / known
                        }
                        guard SizeMath.product(shape) == count, !shape.contains(-1) else {
                            throw MapError(
                                info.name, "cannot reshape \(describeShape(info.shape)) to \(describeShape(rule.shape))"
                            )
                        }
                        detail = "reshape to \(describeShape(shape))"
                    } else if rule.hasAxis {
                        guard rule.axis >= 0, rule.axis < info.shape.count, info.shape[rule.axis] == 1 else {
                            throw MapError(
                                info.name,
                                "cannot squeeze axis \(rule.axis) of \(describeShape(info.shape)): it is not of size 1")
                        }
                        shape = info.shape
                        shape.remove(at: rule.axis)
                        detail = "squeeze axis \(rule.axis)"
                    } else {
                        shape = info.shape.filter { $0 != 1 }
                        detail = "squeeze"
                    }
                    var plan = Plan(operation: rule.operation, sources: [info.name], axis: 0, part: 0, parts: 1)
                    plan.shape = shape
                    try produce(target, shape, info.dtype, plan)
                    entries.append(.init(sources: [info.name], targets: [target], kind: .transformed, detail: detail))
                case .split:
                    let targets = try rule.to.map { (t) throws(MapError) in try t.render(bindings, constants: constants)
                    }
                    guard rule.axis >= 0, rule.axis < info.shape.count, info.shape[rule.axis] % targets.count == 0
                    else {
                        throw MapError(
                            info.name, "cannot split \(describeShape(info.shape)) into \(targets.count) parts")
                    }
                    var shape = info.shape
                    shape[rule.axis] /= targets.count
                    for (k, t) in targets.enumerated() {
                        try produce(
                            t, shape, info.dtype,
                            Plan(
                                operation: .split, sources: [info.name], axis: rule.axis,
                                part: k, parts: targets.count))
                    }
                    entries.append(
                        .init(
                            sources: [info.name], targets: targets, kind: .transformed,
                            detail: "split along axis \(rule.axis)"))
                }
                consumed.insert(info.name)
                continue outer
            }
        }
        let unmapped = source.infos.map(\.name).filter { !consumed.contains($0) }
        if !unmapped.isEmpty && !allowUnmapped {
            throw MapError(
                unmapped[0], "no rule of map \(map.name) maps this tensor (\(unmapped.count) unmapped in all)")
        }
        _ = secondary
        self.source = source
        self.infos = infos
        self.plans = plans
        self.ledger = MapLedger(map: map.name, entries: entries, unmapped: unmapped)
    }

    /// The canonical tensor `name`: a view for renames and axis-0 splits, computed for the other operations.
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let plan = plans[name] else {
            throw ReadError(.inconsistent, path: path, field: name, "no tensor maps to this name")
        }
        do {
            switch plan.operation {
            case .rename, .drop:
                return try source.tensor(named: plan.sources[0])
            case .reshape, .squeeze:
                return try source.tensor(named: plan.sources[0]).contiguous().reshaped(plan.shape)
            case .transpose:
                let t = try source.tensor(named: plan.sources[0])
                return try Tensor(
                    dtype: t.dtype, shape: t.shape.reversed(), storage: t.storage, byteOffset: t.byteOffset,
                    strides: t.strides.reversed()
                ).contiguous()
            case .concat:
                let parts = try plan.sources.map { n in try source.tensor(named: n).contiguous() }
                guard parts[0].dtype.byteWidth != nil else { throw Self.packed(parts[0].dtype, path: path, name: name) }
                return try concatenate(parts, axis: plan.axis)
            case .split:
                let t = try source.tensor(named: plan.sources[0]).contiguous()
                guard let width = t.dtype.byteWidth else { throw Self.packed(t.dtype, path: path, name: name) }
                guard plan.axis < t.shape.count, t.shape[plan.axis] % plan.parts == 0 else {
                    throw ReadError(
                        .inconsistent, path: path, field: name,
                        "\(plan.sources[0]) is \(describeShape(t.shape)), which its description did not say")
                }
                var shape = t.shape
                shape[plan.axis] /= plan.parts
                let outer = t.shape[..<plan.axis].reduce(1, *)
                let inner = shape[plan.axis...].reduce(1, *) * width
                if outer == 1 {
                    return try Tensor(
                        dtype: t.dtype, shape: shape, storage: t.storage,
                        byteOffset: t.byteOffset + plan.part * inner)
                }
                let out = Storage(zeroedByteCount: outer * inner)
                for o in 0..<outer {
                    (out.mutableBaseAddress! + o * inner).copyMemory(
                        from: t.storage.baseAddress + t.byteOffset + (o * plan.parts + plan.part) * inner,
                        byteCount: inner)
                }
                return try Tensor(dtype: t.dtype, shape: shape, storage: out)
            }
        } catch let error as ReadError {
            throw error
        } catch let error as TensorError {
            throw ReadError.from(error, path: path, field: name)
        } catch {
            throw ReadError(.inconsistent, path: path, field: name, "\(error)")
        }
    }

    /// Concat and split copy whole elements: packed sub-byte types (F4, F6) are refused.
    static func packed(_ dtype: DType, path: String, name: String) -> ReadError {
        ReadError(
            .unsupported, path: path, field: name,
            "\(dtype.rawValue) elements are packed below a byte; "
                + "they cannot be split or concatenated")
    }

    func concatenate(_ parts: [Tensor], axis: Int) throws -> Tensor {
        // The plan checked the sources' descriptions; the tensors read must agree with them before bytes are copied.
        var shape = parts[0].shape
        guard axis < shape.count, let width = parts[0].dtype.byteWidth,
            parts.allSatisfy({ p in
                p.dtype == parts[0].dtype && p.shape.count == shape.count
                    && zip(p.shape, shape).enumerated().allSatisfy { $0.offset == axis || $0.element.0 == $0.element.1 }
            })
        else {
            throw TensorError.invalidView(
                "cannot concatenate \(parts.map { describeShape($0.shape) }) along axis \(axis)")
        }
        var total = 0
        for p in parts {
            guard let sum = SizeMath.add(total, p.shape[axis]) else {
                throw TensorError.invalidView("concatenation overflows")
            }
            total = sum
        }
        shape[axis] = total
        guard let bytes = SizeMath.byteCount(shape: shape, dtype: parts[0].dtype) else {
            throw TensorError.invalidView("concatenated shape \(describeShape(shape)) overflows 64 bits")
        }
        let outer = shape[..<axis].reduce(1, *)
        let out = Storage(zeroedByteCount: bytes)
        var offset = 0
        for o in 0..<outer {
            for p in parts {
                let run = p.shape[axis...].reduce(1, *) * width
                try p.withUnsafeBytes { raw in
                    (out.mutableBaseAddress! + offset).copyMemory(from: raw.baseAddress! + o * run, byteCount: run)
                }
                offset += run
            }
        }
        return try Tensor(dtype: parts[0].dtype, shape: shape, storage: out)
    }
}
