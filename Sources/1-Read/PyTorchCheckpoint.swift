// PyTorch checkpoints as torch.save writes them since 1.6: a zip holding `<dir>/data.pkl` (a pickle of the state
// dict) and `<dir>/data/<key>` (one record per storage). The pickle is interpreted by a small machine that knows only
// the opcodes a state dict needs and an allow-list of globals; nothing is ever executed, and everything else —
// another global, TorchScript, the pre-zip format — is refused with the opcode or global and its byte offset.

import AmusedCore

/// A PyTorch `.bin` / `.pt` / `.pth` state dict, its tensors viewing the memory-mapped zip records.
public struct PyTorchCheckpoint: TensorSource {
    /// The file.
    public let path: String
    /// Always `.zip` (PyTorch flavour).
    public var format: WeightFormat { .zip }
    /// Tensors in the order the state dict lists them.
    public let infos: [TensorInfo]
    private let tensors: [String: Tensor]
    private let records: [String: ZipEntry]
    private let zip: ZipArchive

    /// Largest `data.pkl` read: a state dict's pickle takes about 300 bytes per tensor, so this is 200 000 tensors.
    public static let maxPickleBytes = 64 << 20

    /// Opens `path`, validates the archive, interprets the pickle and builds every tensor view (no data copied).
    public init(path: String) throws(ReadError) {
        let zip = try ZipArchive(path: path)
        let names = zip.entries.map(\.name)
        let tops = Set(names.map { $0.split(separator: "/").first.map(String.init) ?? "" })
        if names.contains(where: { $0.hasSuffix("/constants.pkl") || $0.contains("/code/") }) {
            throw ReadError(
                .forbidden, path: path, field: "TorchScript",
                "this is a TorchScript archive (code inside); export the state_dict with torch.save instead")
        }
        guard tops.count == 1, let top = tops.first, let pickle = zip.entry(top + "/data.pkl") else {
            throw ReadError(.malformed, path: path, "a torch.save archive has one top-level folder holding data.pkl")
        }
        var bigEndian = false
        if let order = zip.entry(top + "/byteorder") {
            let value = String(decoding: try zip.data(order), as: UTF8.self)
            guard value == "little" || value == "big" else {
                throw ReadError(.unsupported, path: path, field: "byteorder", "byte order \"\(value)\"")
            }
            bigEndian = value == "big"
        }
        var recordOfStorage: [UnsafeRawPointer: ZipEntry] = [:]
        guard pickle.size <= Self.maxPickleBytes else {
            throw ReadError(
                .limitExceeded, path: path, offset: pickle.dataOffset, field: pickle.name,
                "a pickle of \(pickle.size) bytes (limit \(Self.maxPickleBytes >> 20) MiB)")
        }
        var machine = PickleMachine(bytes: try zip.data(pickle), path: path, bigEndian: bigEndian) {
            (key, dtype, numel) throws(ReadError) -> Storage in
            guard let record = zip.entry("\(top)/data/\(key)") else {
                throw ReadError(
                    .inconsistent, path: path, field: "data/\(key)",
                    "the pickle names storage \(key) but the archive lacks it")
            }
            guard let bytes = SizeMath.byteCount(elements: numel, dtype: dtype), bytes == record.size else {
                throw ReadError(
                    .inconsistent, path: path, offset: record.dataOffset, field: "data/\(key)",
                    "storage of \(numel) \(dtype.rawValue) elements but the record holds \(record.size) bytes")
            }
            if bigEndian {
                // Records written on a big-endian machine: swapped into a new little-endian buffer (a copy).
                guard dtype != .u8 || numel == record.size, let width = dtype.byteWidth else {
                    throw ReadError(.unsupported, path: path, field: "data/\(key)", "big-endian untyped storage")
                }
                let raw = try zip.storedData(record)
                let swapped = Storage(zeroedByteCount: record.size)
                for i in 0..<(record.size / width) {
                    for b in 0..<width {
                        swapped.mutableBaseAddress!.storeBytes(
                            of: raw.baseAddress.load(fromByteOffset: i * width + width - 1 - b, as: UInt8.self),
                            toByteOffset: i * width + b, as: UInt8.self)
                    }
                }
                return swapped
            }
            // CRCs are checked when a tensor is first used, so listing a checkpoint reads no tensor data.
            let storage = try zip.storedData(record, verify: false)
            recordOfStorage[storage.baseAddress] = record
            return storage
        }
        let dict = try machine.run()
        var infos: [TensorInfo] = []
        var tensors: [String: Tensor] = [:]
        var records: [String: ZipEntry] = [:]
        for (key, value) in dict {
            guard case .tensor(let t) = value else {
                throw ReadError(
                    .malformed, path: path, field: key, "not a state_dict: the value of \(key) is not a tensor")
            }
            guard tensors[key] == nil else { throw ReadError(.malformed, path: path, field: key, "duplicate key") }
            tensors[key] = t
            records[key] = recordOfStorage[t.storage.baseAddress]
            infos.append(TensorInfo(name: key, tensor: t, fileOffset: t.byteOffset, path: path))
        }
        self.path = path
        self.infos = infos
        self.tensors = tensors
        self.records = records
        self.zip = zip
    }

    /// The tensor called `name` (a view of its storage record; strided views stay strided).
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let t = tensors[name] else {
            throw ReadError(.inconsistent, path: path, field: name, "no tensor of this name in the checkpoint")
        }
        do { try t.storage.mappedFile?.checkIntact() } catch { throw ReadError.from(error, path: path, field: name) }
        if let record = records[name] { try zip.verify(record) }
        return t
    }
}

/// The values the pickle machine handles. Containers are objects that the machine also keeps in a flat list, so
/// that it can empty them one by one when it is done: nested values are never freed (or walked) recursively, which
/// would overflow the stack on a pickle of 10^6 nested tuples.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    case global(String)
    case storage(Storage, DType, Int)
    case tensor(Tensor)

    /// How many containers deep this value is (0 for scalars), as recorded when each container was built or grew.
    var depth: Int {
        switch self {
        case .tuple(let t): t.depth
        case .list(let l): l.depth
        case .dict(let d): d.depth
        default: 0
        }
    }
}

/// A pickle container: its nesting depth and a way to let go of its contents.
class PickleContainer {
    var depth = 1
    func removeAll() {}
}

final class PickleTuple: PickleContainer {
    private(set) var items: [PickleValue]
    init(_ items: [PickleValue]) {
        self.items = items
        super.init()
        depth = 1 + (items.map(\.depth).max() ?? 0)
    }
    override func removeAll() { items = [] }
}

final class PickleList: PickleContainer {
    var items: [PickleValue] = []
    override func removeAll() { items = [] }
}

final class PickleDict: PickleContainer {
    var entries: [(PickleValue, PickleValue)] = []
    var ordered = false
    override func removeAll() { entries = [] }
}

/// Interprets the opcodes a torch.save state dict uses (protocol 2; 3 and 4 without frames), nothing else.
struct PickleMachine {
    let bytes: [UInt8]
    let path: String
    let loadStorage: (String, DType, Int) throws(ReadError) -> Storage
    var pos = 0
    var stack: [PickleValue] = []
    var literal: [Bool] = []  // whether each stack slot was pushed by a string opcode (for STACK_GLOBAL)
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]
    var storages: [String: (DType, Int, Storage)] = [:]
    var containers: [PickleContainer] = []
    /// Records were written on a big-endian machine (untyped storages cannot be swapped before their dtype is known).
    var bigEndian = false

    static let maxMemo = 1 << 20
    static let maxStack = 1 << 20
    /// Containers in one pickle: a state dict uses about eight per tensor, so this allows 250 000 tensors while
    /// keeping the machine's objects near 200 MB.
    static let maxContainers = 1 << 21
    /// Nesting: a state dict is at most five deep (dict → REDUCE arguments → size tuple; `_metadata` dicts).
    static let maxDepth = 32
    /// Largest tensor whose view expands its storage (zero strides) that may be read; it is copied when used.
    static let maxExpandedBytes = 64 << 20
    static let storageTypes: [String: DType] = [
        "torch.FloatStorage": .f32, "torch.DoubleStorage": .f64, "torch.HalfStorage": .f16,
        "torch.BFloat16Storage": .bf16, "torch.LongStorage": .i64, "torch.IntStorage": .i32,
        "torch.ShortStorage": .i16, "torch.CharStorage": .i8, "torch.ByteStorage": .u8, "torch.BoolStorage": .bool,
        // Newer dtypes are saved as untyped (byte) storages rebuilt with _rebuild_tensor_v3 and a dtype object.
        "torch.storage.UntypedStorage": .u8,
    ]
    /// dtype objects `_rebuild_tensor_v3` names.
    static let dtypeObjects: [String: DType] = [
        "torch.float32": .f32, "torch.float64": .f64, "torch.float16": .f16, "torch.bfloat16": .bf16,
        "torch.int64": .i64, "torch.int32": .i32, "torch.int16": .i16, "torch.int8": .i8, "torch.uint8": .u8,
        "torch.bool": .bool, "torch.uint16": .u16, "torch.uint32": .u32, "torch.uint64": .u64,
        "torch.float8_e4m3fn": .f8e4m3, "torch.float8_e5m2": .f8e5m2,
    ]
    static let allowedGlobals: Set<String> = Set([
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
    ])
    .union(storageTypes.keys).union(dtypeObjects.keys)

    init(
        bytes: [UInt8], path: String, bigEndian: Bool = false,
        loadStorage: @escaping (String, DType, Int) throws(ReadError) -> Storage
    ) {
        self.bytes = bytes
        self.path = path
        self.bigEndian = bigEndian
        self.loadStorage = loadStorage
    }

    func fail(_ family: ReadError.Family, _ at: Int, _ message: String) -> ReadError {
        ReadError(family, path: path, offset: at, field: "data.pkl", message)
    }

    mutating func take(_ n: Int, at: Int) throws(ReadError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - pos else {
            throw fail(.truncated, at, "needs \(n) bytes but \(bytes.count - pos) remain")
        }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }

    mutating func uint(_ n: Int, at: Int) throws(ReadError) -> UInt64 {
        try take(n, at: at).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// Registers a new container (so `tearDown` can empty it) after checking the count and depth limits.
    mutating func make(_ value: PickleValue, _ container: PickleContainer, at: Int) throws(ReadError) -> PickleValue {
        guard containers.count < Self.maxContainers else {
            throw fail(.limitExceeded, at, "more than \(Self.maxContainers) tuples, lists and dicts")
        }
        containers.append(container)
        try checkDepth(container, at: at)
        return value
    }

    func checkDepth(_ container: PickleContainer, at: Int) throws(ReadError) {
        guard container.depth <= Self.maxDepth else {
            throw fail(.limitExceeded, at, "values nested more than \(Self.maxDepth) deep (a state dict needs five)")
        }
    }

    /// Empties every container, one at a time: what is left holds no nested values, so freeing it cannot recurse.
    mutating func tearDown() {
        stack = []
        memo = [:]
        for c in containers { c.removeAll() }
        containers = []
    }

    mutating func push(_ v: PickleValue, literal isLiteral: Bool = false) throws(ReadError) {
        guard stack.count < Self.maxStack else { throw fail(.limitExceeded, pos, "pickle stack too deep") }
        stack.append(v)
        literal.append(isLiteral)
    }

    mutating func pop(at: Int) throws(ReadError) -> PickleValue {
        guard let v = stack.popLast(), stack.count >= (marks.last ?? 0) else {
            throw fail(.malformed, at, "stack underflow")
        }
        literal.removeLast()
        return v
    }

    mutating func popMark(at: Int) throws(ReadError) -> [PickleValue] {
        guard let m = marks.popLast(), m <= stack.count else { throw fail(.malformed, at, "no MARK on the stack") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        literal.removeSubrange(m...)
        return items
    }

    mutating func string(_ n: Int, at: Int) throws(ReadError) -> String {
        guard let s = String(validating: try take(n, at: at), as: UTF8.self) else {
            throw fail(.malformed, at, "string is not UTF-8")
        }
        return s
    }

    mutating func line(at: Int) throws(ReadError) -> String {
        guard let end = bytes[pos...].prefix(256).firstIndex(of: 0x0A) else {
            throw fail(.malformed, at, "GLOBAL operand is not a short line")
        }
        let s = String(decoding: bytes[pos..<end], as: UTF8.self)
        pos = end + 1
        return s
    }

    mutating func tuple(_ items: [PickleValue], at: Int) throws(ReadError) -> PickleValue {
        let t = PickleTuple(items)
        return try make(.tuple(t), t, at: at)
    }

    /// Raises a list's or dict's recorded depth for values about to go in, within the limit.
    func grow(_ container: PickleContainer, by values: [PickleValue], at: Int) throws(ReadError) {
        container.depth = max(container.depth, 1 + (values.map(\.depth).max() ?? 0))
        try checkDepth(container, at: at)
    }

    func allow(_ global: String, at: Int) throws(ReadError) -> PickleValue {
        guard Self.allowedGlobals.contains(global) else {
            throw fail(.forbidden, at, "global \(global) is not allowed in a state dict (nothing is ever executed)")
        }
        return .global(global)
    }

    /// Runs to STOP and returns the top-level dict's (key, value) pairs.
    mutating func run() throws(ReadError) -> [(String, PickleValue)] {
        defer { tearDown() }
        return try interpret()
    }

    private mutating func interpret() throws(ReadError) -> [(String, PickleValue)] {
        while true {
            let at = pos
            guard pos < bytes.count else { throw fail(.truncated, at, "pickle ends without STOP") }
            let op = bytes[pos]
            pos += 1
            switch op {
            case 0x80:  // PROTO
                let v = try uint(1, at: at)
                guard v >= 2 && v <= 4 else { throw fail(.unsupported, at, "pickle protocol \(v) (2 to 4 are read)") }
            case 0x2E:  // STOP
                guard pos == bytes.count else { throw fail(.malformed, pos, "\(bytes.count - pos) bytes after STOP") }
                guard stack.count == 1, marks.isEmpty, case .dict(let d) = stack[0] else {
                    throw fail(.malformed, at, "not a state_dict: the pickle's result is not a dict")
                }
                return try d.entries.map { (k, v) throws(ReadError) in
                    guard case .string(let key) = k else {
                        throw fail(.malformed, at, "not a state_dict: a key is not a string")
                    }
                    return (key, v)
                }
            case 0x28: marks.append(stack.count)  // MARK
            case 0x29: try push(try tuple([], at: at))  // EMPTY_TUPLE
            case 0x74: try push(try tuple(try popMark(at: at), at: at))  // TUPLE
            case 0x85, 0x86, 0x87:  // TUPLE1..3
                let n = Int(op) - 0x84
                var items: [PickleValue] = []
                for _ in 0..<n { items.insert(try pop(at: at), at: 0) }
                try push(try tuple(items, at: at))
            case 0x7D:  // EMPTY_DICT
                let d = PickleDict()
                try push(try make(.dict(d), d, at: at))
            case 0x5D:  // EMPTY_LIST
                let l = PickleList()
                try push(try make(.list(l), l, at: at))
            case 0x61:  // APPEND
                let v = try pop(at: at)
                guard case .list(let l) = stack.last else { throw fail(.malformed, at, "APPEND to a non-list") }
                try grow(l, by: [v], at: at)
                l.items.append(v)
            case 0x65:  // APPENDS
                let items = try popMark(at: at)
                guard case .list(let l) = stack.last else { throw fail(.malformed, at, "APPENDS to a non-list") }
                try grow(l, by: items, at: at)
                l.items.append(contentsOf: items)
            case 0x73:  // SETITEM
                let v = try pop(at: at), k = try pop(at: at)
                guard case .dict(let d) = stack.last else { throw fail(.malformed, at, "SETITEM on a non-dict") }
                try grow(d, by: [k, v], at: at)
                d.entries.append((k, v))
            case 0x75:  // SETITEMS
                let items = try popMark(at: at)
                guard items.count % 2 == 0, case .dict(let d) = stack.last else {
                    throw fail(.malformed, at, "SETITEMS needs a dict and key/value pairs")
                }
                try grow(d, by: items, at: at)
                for i in stride(from: 0, to: items.count, by: 2) { d.entries.append((items[i], items[i + 1])) }
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try uint(4, at: at)))))  // BININT
            case 0x4B: try push(.int(Int(try uint(1, at: at))))  // BININT1
            case 0x4D: try push(.int(Int(try uint(2, at: at))))  // BININT2
            case 0x8A:  // LONG1
                let n = Int(try uint(1, at: at))
                guard n <= 8 else { throw fail(.limitExceeded, at, "integer of \(n) bytes") }
                let raw = try take(n, at: at)
                var v: UInt64 = 0
                for (i, b) in raw.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
                if n > 0 && n < 8 && raw.last! & 0x80 != 0 { v |= ~UInt64(0) << (8 * UInt64(n)) }
                try push(.int(Int(Int64(bitPattern: v))))
            case 0x47:  // BINFLOAT (big-endian)
                let raw = try take(8, at: at)
                try push(.float(Double(bitPattern: raw.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
            case 0x58: try push(.string(try string(Int(try uint(4, at: at)), at: at)), literal: true)  // BINUNICODE
            case 0x8C:  // SHORT_BINUNICODE
                try push(.string(try string(Int(try uint(1, at: at)), at: at)), literal: true)
            case 0x8D:  // BINUNICODE8
                let n = try uint(8, at: at)
                guard n <= UInt64(bytes.count - pos) else {
                    throw fail(.truncated, at, "string longer than the pickle")
                }
                try push(.string(try string(Int(n), at: at)), literal: true)
            case 0x63:  // GLOBAL
                let module = try line(at: at), name = try line(at: at)
                try push(try allow("\(module).\(name)", at: at))
            case 0x93:  // STACK_GLOBAL: only from two literal strings
                guard stack.count >= 2, literal[literal.count - 1], literal[literal.count - 2],
                    case .string(let name) = try pop(at: at), case .string(let module) = try pop(at: at)
                else { throw fail(.forbidden, at, "STACK_GLOBAL whose operands are not literal strings") }
                try push(try allow("\(module).\(name)", at: at))
            case 0x71, 0x72, 0x94:  // BINPUT, LONG_BINPUT, MEMOIZE
                let index = op == 0x71 ? Int(try uint(1, at: at)) : op == 0x72 ? Int(try uint(4, at: at)) : memo.count
                guard let top = stack.last else { throw fail(.malformed, at, "memoize on an empty stack") }
                guard memo.count < Self.maxMemo || memo[index] != nil else {
                    throw fail(.limitExceeded, at, "memo too large")
                }
                memo[index] = top
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let index = op == 0x68 ? Int(try uint(1, at: at)) : Int(try uint(4, at: at))
                guard let v = memo[index] else { throw fail(.malformed, at, "dangling memo reference \(index)") }
                try push(v)
            case 0x51:  // BINPERSID: ('storage', type, key, location, numel)
                guard case .tuple(let t) = try pop(at: at), case let id = t.items, id.count == 5,
                    case .string("storage") = id[0],
                    case .global(let type) = id[1], let dtype = Self.storageTypes[type], case .string(let key) = id[2],
                    case .string = id[3], case .int(let numel) = id[4], numel >= 0
                else { throw fail(.malformed, at, "persistent id is not ('storage', type, key, location, numel)") }
                if let known = storages[key] {
                    guard known.0 == dtype, known.1 == numel else {
                        throw fail(.inconsistent, at, "storage \(key) declared twice with different types or sizes")
                    }
                    try push(.storage(known.2, dtype, numel))
                } else {
                    let storage = try loadStorage(key, dtype, numel)
                    storages[key] = (dtype, numel, storage)
                    try push(.storage(storage, dtype, numel))
                }
            case 0x52:  // REDUCE
                guard case .tuple(let t) = try pop(at: at), case let args = t.items,
                    case .global(let callable) = try pop(at: at)
                else {
                    throw fail(.malformed, at, "REDUCE needs an allowed callable and an argument tuple")
                }
                try push(try reduce(callable, args, at: at))
            case 0x62:  // BUILD: only the state dict's `_metadata`
                let state = try pop(at: at)
                guard case .dict(let target) = stack.last, target.ordered, case .dict(let s) = state,
                    s.entries.allSatisfy({ if case .string("_metadata") = $0.0 { true } else { false } })
                else { throw fail(.forbidden, at, "BUILD other than a state dict's _metadata") }
            default:
                let names: [UInt8: String] = [
                    0x81: "NEWOBJ", 0x69: "INST", 0x6F: "OBJ", 0x92: "NEWOBJ_EX", 0x82: "EXT1",
                    0x83: "EXT2", 0x84: "EXT4", 0x50: "PERSID", 0x95: "FRAME",
                    0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
                    0x53: "STRING", 0x55: "SHORT_BINSTRING", 0x54: "BINSTRING",
                ]
                throw fail(
                    .unsupported, at, "opcode \(names[op] ?? "0x" + String(op, radix: 16)) is not read in a state dict")
            }
        }
    }

    mutating func reduce(_ callable: String, _ args: [PickleValue], at: Int) throws(ReadError) -> PickleValue {
        switch callable {
        case "collections.OrderedDict":
            guard args.isEmpty else { throw fail(.malformed, at, "OrderedDict with arguments") }
            let d = PickleDict()
            d.ordered = true
            return try make(.dict(d), d, at: at)
        case "torch._utils._rebuild_parameter":
            guard args.count == 3, case .tensor = args[0] else { throw fail(.malformed, at, "bad _rebuild_parameter") }
            try requireEmptyHooks(args[2], at: at)
            return args[0]
        case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3":
            let v3 = callable.hasSuffix("v3")
            guard args.count == (v3 ? 7 : 6) || args.count == (v3 ? 8 : 7),
                case .storage(let storage, var dtype, let numel) = args[0],
                case .int(let offset) = args[1], case .tuple(let sizeTuple) = args[2],
                case .tuple(let strideTuple) = args[3], case let sizeValues = sizeTuple.items,
                case let strideValues = strideTuple.items
            else { throw fail(.malformed, at, "bad \(callable) arguments") }
            try requireEmptyHooks(args[5], at: at)
            if v3 {
                // v3: an untyped byte storage and a dtype object.
                guard case .global(let name) = args[6], let typed = Self.dtypeObjects[name], dtype == .u8,
                    let width = typed.byteWidth, numel % width == 0
                else { throw fail(.malformed, at, "bad _rebuild_tensor_v3 dtype or storage size") }
                dtype = typed
                guard !bigEndian || width == 1 else {
                    // The record was read as bytes; its elements would need swapping at this dtype's width.
                    throw fail(
                        .unsupported, at,
                        "big-endian \(name) tensor in an untyped storage; re-save it on a "
                            + "little-endian machine")
                }
            }
            let metadataIndex = v3 ? 7 : 6
            if args.count > metadataIndex, case .dict(let metadata) = args[metadataIndex], !metadata.entries.isEmpty {
                throw fail(.forbidden, at, "tensor metadata is not empty")
            }
            guard sizeValues.count == strideValues.count else {
                throw fail(.malformed, at, "size and stride ranks differ")
            }
            guard sizeValues.count <= 16 else { throw fail(.limitExceeded, at, "rank \(sizeValues.count) over 16") }
            var shape: [Int] = [], strides: [Int] = []
            for (s, t) in zip(sizeValues, strideValues) {
                guard case .int(let size) = s, case .int(let stride) = t else {
                    throw fail(.malformed, at, "non-integer size or stride")
                }
                guard size >= 0, stride >= 0 else { throw fail(.inconsistent, at, "negative size or stride") }
                shape.append(size)
                strides.append(stride)
            }
            guard offset >= 0 else { throw fail(.inconsistent, at, "negative storage offset") }
            guard SizeMath.byteCount(shape: shape, dtype: dtype) != nil else {
                throw fail(
                    .arithmeticOverflow, at, "sizes \(describeShape(shape)) of \(dtype.rawValue) overflow 64 bits")
            }
            guard let width = dtype.byteWidth, let byteOffset = SizeMath.product([offset, width]) else {
                throw fail(.arithmeticOverflow, at, "storage offset overflows")
            }
            _ = numel
            let tensor: Tensor
            do {
                tensor = try Tensor(
                    dtype: dtype, shape: shape, storage: storage, byteOffset: byteOffset, strides: strides)
            } catch {
                throw fail(.inconsistent, at, "tensor view does not fit its storage: \(error)")
            }
            // Zero or overlapping strides (torch's expanded views) reach more elements than the storage holds; copying
            // such a view contiguous would allocate from a size claim, so beyond a fixed allowance it is refused.
            if tensor.byteCount > storage.byteCount && tensor.byteCount > Self.maxExpandedBytes {
                throw fail(
                    .limitExceeded, at,
                    "an expanded view of \(tensor.byteCount) bytes over a \(storage.byteCount)-"
                        + "byte storage (limit \(Self.maxExpandedBytes >> 20) MiB); save it with .contiguous() first")
            }
            return .tensor(tensor)
        default:
            throw fail(.forbidden, at, "\(callable) cannot be called")
        }
    }

    func requireEmptyHooks(_ v: PickleValue, at: Int) throws(ReadError) {
        guard case .dict(let d) = v, d.entries.isEmpty else {
            throw fail(.forbidden, at, "backward hooks are not empty")
        }
    }
}
