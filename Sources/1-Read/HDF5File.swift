// HDF5 weights (h5py / Keras files) through libhdf5 (the 1.10 API Debian ships). Datasets in nested groups become
// dotted names, as h5py's paths with '/' → '.'. Before any data is read: external links, soft links, external raw
// storage, virtual datasets and filters other than HDF5's built-in ones are refused, so no other file is opened and
// no plugin is loaded; types other than float, integer and h5py's bool enum are refused; traversal is bounded.
// Data is read (copied: the format forces it) only when a tensor is asked for.

import AmusedCore
import CHDF5
import Foundation

/// An HDF5 file's numeric datasets as tensors.
public final class HDF5File: TensorSource, @unchecked Sendable {
    /// Deepest group nesting followed.
    public static let maxDepth = 32
    /// Most objects visited.
    public static let maxObjects = 100_000
    /// The file.
    public let path: String
    /// Always `.hdf5`.
    public var format: WeightFormat { .hdf5 }
    /// Datasets in traversal order.
    public let infos: [TensorInfo]
    private let file: hid_t
    private let hdfPaths: [String: String]

    /// One lock for every call into libhdf5 from any file: builds without thread safety (Homebrew's, for one) must
    /// never be entered from two threads; Debian's threadsafe build serialises its calls the same way anyway.
    private static let library = Lock()

    /// Opens `path` and validates every dataset's metadata.
    public init(path: String) throws(ReadError) {
        self.path = path
        (file, infos, hdfPaths) = try Self.library.withLock { () throws(ReadError) in try Self.open(path) }
    }

    /// libhdf5 prints its error stack on stderr unless told not to, and the setting is per thread: every entry point
    /// turns it off for the thread it runs on (the errors become `ReadError`s instead).
    static func enter() {
        _ = initialized
        H5Eset_auto2(0 /* H5E_DEFAULT */, nil, nil)
    }

    private static func open(_ path: String) throws(ReadError) -> (hid_t, [TensorInfo], [String: String]) {
        enter()
        let file = H5Fopen(path, 0 /* H5F_ACC_RDONLY */, 0 /* H5P_DEFAULT */)
        guard file >= 0 else { throw ReadError(.malformed, path: path, offset: 0, "libhdf5 cannot open it as HDF5") }
        var infos: [TensorInfo] = []
        var paths: [String: String] = [:]
        var visited = Set<haddr_t>()
        var objects = 0
        func walk(_ group: hid_t, prefix: String, depth: Int) throws(ReadError) {
            guard depth <= Self.maxDepth else {
                throw ReadError(
                    .malformed, path: path, field: prefix, "groups nested deeper than \(Self.maxDepth) (cycle?)")
            }
            var ginfo = H5G_info_t()
            guard H5Gget_info(group, &ginfo) >= 0 else {
                throw ReadError(.malformed, path: path, field: prefix, "unreadable group")
            }
            for i in 0..<ginfo.nlinks {
                objects += 1
                guard objects <= Self.maxObjects else {
                    throw ReadError(.limitExceeded, path: path, "more than \(Self.maxObjects) objects")
                }
                let length = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, 0)
                guard length > 0, length < 65536 else {
                    throw ReadError(.malformed, path: path, field: prefix, "bad link name")
                }
                var buffer = [CChar](repeating: 0, count: Int(length) + 1)
                H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buffer, Int(length) + 1, 0)
                let name = String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let full = prefix.isEmpty ? name : prefix + "/" + name
                var linfo = H5L_info_t()
                guard H5Lget_info(group, name, &linfo, 0) >= 0 else {
                    throw ReadError(.malformed, path: path, field: full, "unreadable link")
                }
                switch linfo.type {
                case H5L_TYPE_HARD: break
                case H5L_TYPE_EXTERNAL:
                    throw ReadError(.forbidden, path: path, field: full, "external link (never followed)")
                case H5L_TYPE_SOFT:
                    throw ReadError(.unsupported, path: path, field: full, "soft link (not followed)")
                default:
                    throw ReadError(.unsupported, path: path, field: full, "user-defined link")
                }
                guard visited.insert(linfo.u.address).inserted else {
                    throw ReadError(
                        .malformed, path: path, field: full, "an object reached twice (hard-link cycle or alias)")
                }
                let object = H5Oopen(group, name, 0)
                guard object >= 0 else { throw ReadError(.malformed, path: path, field: full, "unreadable object") }
                defer { H5Oclose(object) }
                switch H5Iget_type(object) {
                case H5I_GROUP:
                    try walk(object, prefix: full, depth: depth + 1)
                case H5I_DATASET:
                    let info = try Self.describe(object, name: full, path: path)
                    let dotted = full.replacingOccurrences(of: "/", with: ".")
                    if let other = paths[dotted] {
                        throw ReadError(
                            .malformed, path: path, field: dotted,
                            "datasets \(other) and \(full) would both be named \(dotted)")
                    }
                    paths[dotted] = full
                    infos.append(
                        try TensorInfo(
                            name: dotted, dtype: info.dtype, shape: info.shape, fileOffset: 0,
                            byteCount: info.bytes, path: path))
                default:
                    continue  // named datatypes are not weights
                }
            }
        }
        do {
            try walk(file, prefix: "", depth: 0)
        } catch {
            H5Fclose(file)
            throw error
        }
        return (file, infos, paths)
    }

    deinit {
        let file = file
        Self.library.withLock { () -> Void in
            Self.enter()
            H5Fclose(file)
        }
    }

    /// libhdf5 set up once, without its exit-time cleanup: at exit the system takes the memory back anyway, and the
    /// cleanup gives up printing "HDF5: infinite loop closing library" when a thread that entered the library still
    /// holds its per-thread error stack. Code that calls libhdf5 directly calls `initializeLibrary()` first.
    static let initialized: Void = {
        H5dont_atexit()
        H5open()
    }()

    /// Sets libhdf5 up as this reader does (call it before any direct libhdf5 call, as tests that build files do).
    public static func initializeLibrary() { _ = initialized }

    /// Built-in filters, which never load a plugin: deflate, shuffle, fletcher32, nbit, scale-offset.
    static let builtInFilters: Set<H5Z_filter_t> = [1, 2, 3, 5, 6]

    static func describe(_ dataset: hid_t, name: String, path: String) throws(ReadError)
        -> (dtype: DType, shape: [Int], bytes: Int)
    {
        let dcpl = H5Dget_create_plist(dataset)
        defer { H5Pclose(dcpl) }
        if H5Pget_layout(dcpl) == H5D_VIRTUAL {
            throw ReadError(.forbidden, path: path, field: name, "virtual dataset (maps other files)")
        }
        if H5Pget_external_count(dcpl) > 0 {
            throw ReadError(.forbidden, path: path, field: name, "external raw storage (never opened)")
        }
        for i in 0..<max(0, H5Pget_nfilters(dcpl)) {
            var flags: UInt32 = 0, count = 0, config: UInt32 = 0
            var values = [UInt32](repeating: 0, count: 16)
            var filterName = [CChar](repeating: 0, count: 64)
            count = 16
            let id = H5Pget_filter2(dcpl, UInt32(i), &flags, &count, &values, 64, &filterName, &config)
            guard builtInFilters.contains(id) else {
                throw ReadError(.unsupported, path: path, field: name, "filter \(id) needs a plugin (not loaded)")
            }
        }
        let type = H5Dget_type(dataset)
        defer { H5Tclose(type) }
        let size = H5Tget_size(type)
        let dtype: DType
        switch H5Tget_class(type) {
        case H5T_FLOAT:
            switch size {
            case 2:
                // IEEE half (numpy float16, as Keras mixed precision saves): sign bit 15, 5 exponent bits at 10 with
                // bias 15, 10 mantissa bits. Other 2-byte floats are not read.
                var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
                H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize)
                guard (spos, epos, esize, mpos, msize) == (15, 10, 5, 0, 10), H5Tget_ebias(type) == 15 else {
                    throw ReadError(.unsupported, path: path, field: name, "a 2-byte float that is not IEEE half")
                }
                dtype = .f16
            case 4: dtype = .f32
            case 8: dtype = .f64
            default: throw ReadError(.unsupported, path: path, field: name, "\(size)-byte float")
            }
        case H5T_INTEGER:
            let signed = H5Tget_sign(type) == H5T_SGN_2
            switch (size, signed) {
            case (1, true): dtype = .i8
            case (1, false): dtype = .u8
            case (2, true): dtype = .i16
            case (2, false): dtype = .u16
            case (4, true): dtype = .i32
            case (4, false): dtype = .u32
            case (8, true): dtype = .i64
            case (8, false): dtype = .u64
            default: throw ReadError(.unsupported, path: path, field: name, "\(size)-byte integer")
            }
        case H5T_ENUM where size == 1:
            dtype = .bool  // h5py stores numpy bools as an int8 enum {FALSE, TRUE}
        case H5T_OPAQUE where size == 2:
            throw ReadError(
                .unsupported, path: path, field: name,
                "an untagged 2-byte opaque type (h5py stores "
                    + "ml_dtypes bfloat16 this way, which cannot be told from other opaque data); save float32 or float16"
            )
        default:
            throw ReadError(
                .unsupported, path: path, field: name,
                "datatype class \(H5Tget_class(type).rawValue) (compound, string, reference, opaque, …)")
        }
        let space = H5Dget_space(dataset)
        defer { H5Sclose(space) }
        let rank = H5Sget_simple_extent_ndims(space)
        guard rank >= 0, rank <= 32 else { throw ReadError(.limitExceeded, path: path, field: name, "rank \(rank)") }
        var dims = [hsize_t](repeating: 0, count: Int(rank))
        H5Sget_simple_extent_dims(space, &dims, nil)
        let shape = dims.map { Int(clamping: $0) }
        guard let count = SizeMath.product(shape), let bytes = SizeMath.byteCount(elements: count, dtype: dtype) else {
            throw ReadError(.arithmeticOverflow, path: path, field: name, "shape \(describeShape(shape)) overflows")
        }
        if H5Pget_layout(dcpl) == H5D_CONTIGUOUS && count > 0 && H5Dget_storage_size(dataset) != UInt64(bytes) {
            throw ReadError(
                .limitExceeded, path: path, field: name,
                "contiguous dataset declares \(bytes) bytes but stores \(H5Dget_storage_size(dataset))")
        }
        return (dtype, shape, bytes)
    }

    /// The dataset called `name` (dots for '/'), read into memory in native byte order.
    public func tensor(named name: String) throws(ReadError) -> Tensor {
        guard let hdf = hdfPaths[name], let info = infos.first(where: { $0.name == name }) else {
            throw ReadError(.inconsistent, path: path, field: name, "no dataset of this name in the file")
        }
        return try Self.library.withLock { () throws(ReadError) -> Tensor in
            Self.enter()
            let dataset = H5Dopen2(file, hdf, 0)
            guard dataset >= 0 else { throw ReadError(.malformed, path: path, field: name, "cannot open the dataset") }
            defer { H5Dclose(dataset) }
            // The file's type converted to this machine's native layout (byte order included) by libhdf5; libhdf5 1.10
            // has no native half type, so float16 is read as an IEEE half built here (little-endian, as Tensor keeps).
            let fileType = H5Dget_type(dataset)
            let memoryType =
                info.dtype == .f16 ? Self.littleEndian(fileType) : H5Tget_native_type(fileType, H5T_DIR_DEFAULT)
            H5Tclose(fileType)
            guard memoryType >= 0, H5Tget_size(memoryType) * 8 == info.dtype.bitWidth else {
                throw ReadError(.unsupported, path: path, field: name, "no native type of the dataset's size")
            }
            defer { H5Tclose(memoryType) }
            try Self.checkChunks(
                dataset, name: name, path: path, elementSize: info.dtype.byteWidth ?? 1,
                bytes: info.byteCount)
            let storage = Storage(zeroedByteCount: info.byteCount)
            if info.byteCount > 0 {
                guard H5Dread(dataset, memoryType, 0, 0, 0, storage.mutableBaseAddress) >= 0 else {
                    throw ReadError(.integrity, path: path, field: name, "libhdf5 could not read the data (corrupt?)")
                }
            }
            do throws(TensorError) { return try Tensor(dtype: info.dtype, shape: info.shape, storage: storage) } catch {
                throw ReadError.from(error, path: path, field: name)
            }
        }
    }
}

extension HDF5File {
    /// `half` (a file's IEEE half type, checked by `describe`) in little-endian order (the caller closes it).
    static func littleEndian(_ half: hid_t) -> hid_t {
        let t = H5Tcopy(half)
        H5Tset_order(t, H5T_ORDER_LE)
        return t
    }

    /// Before libhdf5 allocates or decompresses anything: a chunked dataset must have every chunk written (libhdf5
    /// would otherwise allocate the declared size and fill it, from a file of a few bytes), and every deflated chunk
    /// must inflate (with a bound) to exactly its declared chunk size: libhdf5's own deflate filter grows its buffer
    /// to whatever a chunk expands to, so a chunk bomb would otherwise be decoded in full. Deflate may be combined
    /// with shuffle and fletcher32 (whose 4-byte checksum is set aside); not with the filters that change sizes.
    static func checkChunks(_ dataset: hid_t, name: String, path: String, elementSize: Int, bytes: Int)
        throws(ReadError)
    {
        let dcpl = H5Dget_create_plist(dataset)
        defer { H5Pclose(dcpl) }
        guard H5Pget_layout(dcpl) == H5D_CHUNKED else { return }
        var filters: [H5Z_filter_t] = []
        for i in 0..<max(0, H5Pget_nfilters(dcpl)) {
            var flags: UInt32 = 0, count = 0, config: UInt32 = 0
            var nameBuffer = [CChar](repeating: 0, count: 8)
            filters.append(H5Pget_filter2(dcpl, UInt32(i), &flags, &count, nil, 8, &nameBuffer, &config))
        }
        var chunk = [hsize_t](repeating: 0, count: 32)
        let rank = Int(H5Pget_chunk(dcpl, 32, &chunk))
        guard rank > 0, let elements = SizeMath.product(chunk.prefix(rank).map { Int(clamping: $0) }),
            let chunkBytes = SizeMath.product([elements, elementSize])
        else { throw ReadError(.malformed, path: path, field: name, "bad chunk shape") }
        let space = H5Dget_space(dataset)
        defer { H5Sclose(space) }
        var count: hsize_t = 0
        guard H5Dget_num_chunks(dataset, space, &count) >= 0 else {
            throw ReadError(.malformed, path: path, field: name, "the chunk index cannot be read")
        }
        // Chunks cover the dataset (edge chunks overhang it), so written chunks hold at least its bytes.
        guard chunkBytes > 0, bytes == 0 || Int(clamping: count) >= (bytes + chunkBytes - 1) / chunkBytes else {
            throw ReadError(
                .inconsistent, path: path, field: name,
                "the dataset declares \(bytes) bytes but only \(count) chunks of \(chunkBytes) bytes are written")
        }
        guard let deflateIndex = filters.firstIndex(of: 1) else { return }
        guard filters.allSatisfy({ $0 == 1 || $0 == 2 || $0 == 3 }) else {
            throw ReadError(
                .unsupported, path: path, field: name,
                "deflate combined with nbit or scale-offset (sizes cannot be bounded before decoding)")
        }
        // fletcher32 after deflate appends its checksum to the deflated bytes; before it, to the data deflated.
        let fletcherIndex = filters.firstIndex(of: 3)
        let trailer = fletcherIndex.map { $0 > deflateIndex ? 4 : 0 } ?? 0
        let inflated = chunkBytes + (fletcherIndex.map { $0 < deflateIndex ? 4 : 0 } ?? 0)
        for index in 0..<count {
            var offset = [hsize_t](repeating: 0, count: rank)
            var mask: UInt32 = 0, address: haddr_t = 0, size: hsize_t = 0
            guard H5Dget_chunk_info(dataset, space, index, &offset, &mask, &address, &size) >= 0 else { continue }
            // Deflate cannot shrink data below 1/1032 of its size; a stored size that large is also suspicious.
            guard size / 2 <= hsize_t(chunkBytes) + 512 else {  // (size ≤ 2 · chunk + 1024, without overflow)
                throw ReadError(
                    .limitExceeded, path: path, field: name, "chunk \(index) stores \(size) bytes for \(chunkBytes)")
            }
            var raw = [UInt8](repeating: 0, count: Int(size))
            var filterMask: UInt32 = 0
            guard H5Dread_chunk(dataset, 0, &offset, &filterMask, &raw) >= 0 else {
                throw ReadError(.integrity, path: path, field: name, "chunk \(index) cannot be read")
            }
            if filterMask & (1 << UInt32(deflateIndex)) != 0 { continue }  // deflate skipped for this chunk
            guard raw.count >= trailer else {
                throw ReadError(.integrity, path: path, field: name, "chunk \(index) is shorter than its checksum")
            }
            do {
                let out = try Inflate.zlib(Array(raw.dropLast(trailer)), limit: inflated)
                guard out.count == inflated else {
                    throw ReadError(
                        .integrity, path: path, field: name,
                        "chunk \(index) inflates to \(out.count) bytes, not \(inflated)")
                }
            } catch let error as ZlibError {
                throw ReadError(.limitExceeded, path: path, field: name, "chunk \(index): \(error)")
            } catch let error as ReadError {
                throw error
            } catch {
                throw ReadError(.integrity, path: path, field: name, "chunk \(index): \(error)")
            }
        }
    }
}

extension Lock {
    /// Runs a throwing `body` under the lock.
    func withLock<R>(_ body: () throws(ReadError) -> R) throws(ReadError) -> R {
        var result: Result<R, ReadError>!
        withLock { () -> Void in
            do throws(ReadError) { result = .success(try body()) } catch { result = .failure(error) }
        }
        return try result.get()
    }
}
