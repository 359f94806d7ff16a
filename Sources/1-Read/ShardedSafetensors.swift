// Sharded safetensors: `*.safetensors.index.json` ({"metadata": {"total_size": N}, "weight_map": {name: shard}})
// as transformers and diffusers write it. The index and the shards are checked against each other both ways.

import AmusedCore

/// A checkpoint split over several safetensors files, opened through its index.
public struct ShardedSafetensors: TensorSource {
    /// The index file.
    public let path: String
    /// Always `.shardedSafetensors`.
    public var format: WeightFormat { .shardedSafetensors }
    /// The shards, in the order their names sort.
    public let shards: [SafetensorsFile]
    /// Every tensor, shard by shard in file order.
    public let infos: [TensorInfo]
    private let shardOf: [String: Int]

    /// Opens the index at `path` and every shard it names (in the same folder), and checks that each indexed
    /// tensor is in its shard and each shard tensor is indexed, to that shard.
    public init(indexPath path: String, mapData: Bool = true) throws(ReadError) {
        let file: ReadOnlyFile
        do { file = try ReadOnlyFile(path: path) } catch { throw ReadError.from(error, path: path) }
        guard file.byteCount <= SafetensorsFile.maxHeaderBytes else {
            throw ReadError(.limitExceeded, path: path, "index is \(file.byteCount) bytes, over the 100 MB limit")
        }
        let bytes: [UInt8]
        do { bytes = try file.read(at: 0, count: file.byteCount) } catch { throw ReadError.from(error, path: path) }
        let root = try StrictJSONParser(path: path).parse(bytes)
        guard let weightMap = root["weight_map"]?.objectValue else {
            throw ReadError(.malformed, path: path, field: "weight_map", "index has no weight_map object")
        }
        var indexed: [String: String] = [:]
        for (name, shard) in weightMap.entries {
            guard let shardName = shard.stringValue else {
                throw ReadError(.malformed, path: path, field: name, "weight_map values must be file names")
            }
            // Shard names are file names in the index's folder, never paths.
            guard !shardName.isEmpty, !shardName.contains("/"), !shardName.contains("\\"), shardName != "..",
                shardName != ".", !shardName.contains("\0")
            else {
                throw ReadError(
                    .forbidden, path: path, field: name,
                    "shard \"\(shardName)\" is not a plain file name in the index's folder")
            }
            indexed[name] = shardName
        }
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let shardNames = Set(indexed.values).sorted()
        var shards: [SafetensorsFile] = []
        for shardName in shardNames {
            shards.append(try SafetensorsFile(path: folder + "/" + shardName, mapData: mapData))
        }
        var shardOf: [String: Int] = [:]
        var infos: [TensorInfo] = []
        for (i, shard) in shards.enumerated() {
            for info in shard.infos {
                guard let claimed = indexed[info.name] else {
                    throw ReadError(
                        .inconsistent, path: path, field: info.name,
                        "shard \(shardNames[i]) holds this tensor but the index does not list it "
                            + "(stale index?)")
                }
                guard claimed == shardNames[i] else {
                    throw ReadError(
                        .inconsistent, path: path, field: info.name,
                        "the index puts this tensor in \(claimed) but it is in \(shardNames[i])")
                }
                guard shardOf[info.name] == nil else {
                    throw ReadError(.inconsistent, path: path, field: info.name, "tensor appears in two shards")
                }
                shardOf[info.name] = i
                infos.append(info)
            }
        }
        for (name, shardName) in indexed.sorted(by: { $0.key < $1.key }) where shardOf[name] == nil {
            throw ReadError(
                .inconsistent, path: path, field: name,
                "the index lists this tensor in \(shardName) but that shard does not contain it "
                    + "(stale index?)")
        }
        if let total = root["metadata"]?["total_size"] {
            let sum = infos.reduce(0) { $0 + $1.byteCount }
            guard total.uint64Value == UInt64(sum) else {
                throw ReadError(
                    .inconsistent, path: path, field: "metadata.total_size",
                    "index says total_size \(total.serialized) but the shards hold \(sum) bytes")
            }
        }
        self.path = path
        self.shards = shards
        self.infos = infos
        self.shardOf = shardOf
    }

    /// The tensor called `name`, from its shard (zero-copy).
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let i = shardOf[name] else {
            throw ReadError(.inconsistent, path: path, field: name, "no tensor of this name in the checkpoint")
        }
        return try shards[i].tensor(named: name)
    }
}
