// HDF5: h5py's datasets decode to what h5py reads; and the HDF5 part of the hostile-inputs catalogue (§6.4), with
// the hostile files made here through libhdf5 itself (links, external storage, virtual datasets, plugin filters,
// compound types), each refused before any data is read.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import CHDF5
import Foundation
import Testing

@Suite("HDF5", .serialized)
struct HDF5Tests {
    @Test func h5pyDatasetsMatch() throws {
        let file = try HDF5File(path: FixturePaths.path("formats/weights.h5"))
        let expected = try SafetensorsFile(path: FixturePaths.path("formats/expected.safetensors"))
        let names = expected.names.filter { $0.hasPrefix("h5/") }.map { String($0.dropFirst(3)) }
        #expect(Set(file.names) == Set(names))
        for name in names {
            let ours = try file.tensor(named: name), theirs = try expected.tensor(named: "h5/" + name)
            #expect(ours.shape == theirs.shape && ours.dtype == theirs.dtype, "\(name)")
            #expect(try ours.doubles() == theirs.doubles(), "\(name)")
        }
    }

    /// `openWeights` reads HDF5 in the helper process by default (the `amused` built beside these tests), giving
    /// h5py's values; a helper that crashes (as a libhdf5 memory bug would) is a malformed file for library users
    /// too, and the test process lives on.
    @Test func libraryUsersReadThroughTheHelperByDefault() throws {
        let helper = try #require(HDF5Isolation.helper(), "build the amused executable first (swift build)")
        let source = try openWeights(path: FixturePaths.path("formats/weights.h5"))
        #expect(!(source is HDF5File) && source.format == .hdf5)
        let inProcess = try openWeights(path: FixturePaths.path("formats/weights.h5"), hdf5: .inProcess)
        #expect(inProcess is HDF5File && Set(source.names) == Set(inProcess.names))
        for name in source.names {
            #expect(try source.tensor(named: name).doubles() == inProcess.tensor(named: name).doubles(), "\(name)")
        }
        let scratch = try ScratchFolder()
        let crashing = scratch.path + "/crashing-helper"
        try Data("#!/bin/sh\nAMUSED_HDF5_HELPER_SIMULATE_CRASH=1 exec \"\(helper)\" \"$@\"\n".utf8)
            .write(to: URL(fileURLWithPath: crashing))
        chmod(crashing, 0o755)
        let error = try #require(throws: ReadError.self) {
            try openWeights(path: FixturePaths.path("formats/weights.h5"), hdf5: .isolated(helper: crashing))
        }
        #expect(error.family == .malformed && error.message.contains("crashed"), "\(error)")
    }

    /// Creates an HDF5 file with one float dataset "w" and lets `configure` add the hostile part.
    func make(
        _ path: String, dcpl configure: ((hid_t) -> Void)? = nil, extra: ((hid_t) -> Void)? = nil,
        type: hid_t? = nil
    ) {
        HDF5File.initializeLibrary()
        let file = H5Fcreate(path, 2 /* H5F_ACC_TRUNC */, 0, 0)
        var dims: [hsize_t] = [4]
        let space = H5Screate_simple(1, &dims, nil)
        let dcpl = H5Pcreate(H5P_CLS_DATASET_CREATE_ID_g)
        if let configure { configure(dcpl) }
        let t = type ?? H5Tcopy(H5T_IEEE_F32LE_g)
        let ds = H5Dcreate2(file, "w", t, space, 0, dcpl, 0)
        if ds >= 0 { H5Dclose(ds) }
        if let extra { extra(file) }
        if type == nil { H5Tclose(t) }
        H5Pclose(dcpl)
        H5Sclose(space)
        H5Fclose(file)
    }

    func family(_ path: String) -> ReadError.Family? {
        do {
            let f = try HDF5File(path: path)
            for n in f.names { _ = try f.tensor(named: n) }
            return nil
        } catch {
            return error.family
        }
    }

    @Test func externalLinkIsForbidden() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(path, extra: { file in H5Lcreate_external("/etc/passwd", "/x", file, "evil", 0, 0) })
        #expect(family(path) == .forbidden)
    }

    @Test func softLinkIsNotFollowed() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(path, extra: { file in H5Lcreate_soft("/", file, "loop", 0, 0) })
        #expect(family(path) == .unsupported)
    }

    @Test func externalStorageIsForbidden() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(path, dcpl: { dcpl in H5Pset_external(dcpl, "/etc/passwd", 0, 16) })
        #expect(family(path) == .forbidden)
    }

    @Test func virtualDatasetIsForbidden() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(
            path,
            dcpl: { dcpl in
                var dims: [hsize_t] = [4]
                let space = H5Screate_simple(1, &dims, nil)
                H5Pset_virtual(dcpl, space, "other.h5", "/w", space)
                H5Sclose(space)
            })
        #expect(family(path) == .forbidden)
    }

    @Test func pluginFilterIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(
            path,
            dcpl: { dcpl in
                var chunk: [hsize_t] = [4]
                H5Pset_chunk(dcpl, 1, &chunk)
                H5Pset_filter(dcpl, 32015, 1 /* H5Z_FLAG_OPTIONAL */, 0, nil)  // Zstandard: a plugin filter
            })
        #expect(family(path) == .unsupported)
    }

    /// A compound type of two float32 fields (a class the reader refuses).
    func compoundType() -> hid_t {
        HDF5File.initializeLibrary()
        let compound = H5Tcreate(H5T_COMPOUND, 8)
        H5Tinsert(compound, "a", 0, H5T_IEEE_F32LE_g)
        H5Tinsert(compound, "b", 4, H5T_IEEE_F32LE_g)
        return compound
    }

    @Test func compoundTypeIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(path, type: compoundType())
        #expect(family(path) == .unsupported)
    }

    /// A refusal whose field holds a line break ("\r\n" in a group's name, which Swift counts as one Character) comes
    /// back through the helper on one line, with the breaks as spaces, and the next file through the same helper
    /// gets its own answer (one answer per request: the answers stay in step).
    @Test func lineBreaksInNamesKeepTheHelperInStep() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/crlf.h5"
        let compound = compoundType()
        make(
            path,
            extra: { file in
                let group = H5Gcreate2(file, "a\r\nb\nc", 0, 0, 0)
                var dims: [hsize_t] = [2]
                let space = H5Screate_simple(1, &dims, nil)
                let ds = H5Dcreate2(group, "w", compound, space, 0, 0, 0)
                H5Dclose(ds)
                H5Sclose(space)
                H5Gclose(group)
            })
        let error = try #require(throws: ReadError.self) { try openWeights(path: path) }
        #expect(error.family == .unsupported && error.field == "a  b c/w", "\(error)")
        let good = try openWeights(path: FixturePaths.path("formats/weights.h5"))
        #expect(good.names.contains("model_weights.dense.kernel:0"), "\(good.names)")
    }

    /// H5-07: a contiguous dataset declaring 2^40 elements in a tiny file is refused before anything is read.
    @Test func hugeDeclaredDatasetIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        HDF5File.initializeLibrary()
        let file = H5Fcreate(path, 2, 0, 0)
        var dims: [hsize_t] = [1 << 40]
        let space = H5Screate_simple(1, &dims, nil)
        let dcpl = H5Pcreate(H5P_CLS_DATASET_CREATE_ID_g)
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE)
        let ds = H5Dcreate2(file, "huge", H5T_IEEE_F32LE_g, space, 0, dcpl, 0)
        H5Dclose(ds)
        H5Pclose(dcpl)
        H5Sclose(space)
        H5Fclose(file)
        #expect(family(path) == .limitExceeded)
    }

    /// A zlib stream that inflates to about `bytes` zero bytes (`deflateZeros`): about 1 KB per 160 KB of output.
    func deflateBomb(bytes: Int) -> [UInt8] {
        let produced = 1 + (bytes - 1) / 258 * 258
        // Adler-32 of `produced` zeros: a = 1, b = produced (mod 65521).
        let adler = UInt32(produced % 65521) << 16 | 1
        return [0x78, 0x9C] + deflateZeros(produced)
            + [UInt8(adler >> 24), UInt8((adler >> 16) & 0xFF), UInt8((adler >> 8) & 0xFF), UInt8(adler & 0xFF)]
    }

    /// A file with one chunked float32 dataset "w" of `dims` in chunks of `chunk`, its creation properties set by
    /// `configure`, and `raw` (when given) written as the first chunk's stored bytes, filters bypassed.
    func makeChunked(
        _ path: String, dims: [hsize_t], chunk: [hsize_t], configure: (hid_t) -> Void = { _ in },
        raw: [UInt8]? = nil
    ) {
        HDF5File.initializeLibrary()
        let file = H5Fcreate(path, 2, 0, 0)
        var dims = dims, chunk = chunk
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        let dcpl = H5Pcreate(H5P_CLS_DATASET_CREATE_ID_g)
        H5Pset_chunk(dcpl, Int32(chunk.count), &chunk)
        configure(dcpl)
        let ds = H5Dcreate2(file, "w", H5T_IEEE_F32LE_g, space, 0, dcpl, 0)
        if let raw {
            var origin = [hsize_t](repeating: 0, count: dims.count)
            #expect(H5Dwrite_chunk(ds, 0, 0, &origin, raw.count, raw) >= 0)
        }
        H5Dclose(ds)
        H5Pclose(dcpl)
        H5Sclose(space)
        H5Fclose(file)
    }

    /// H5-08: a deflated chunk that expands far beyond its declared 16 bytes is refused before libhdf5 (whose
    /// deflate filter grows its buffer without bound) decompresses it.
    @Test func chunkBombIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        // ~25 KB stored (libhdf5 refuses much larger chunks for 16-byte chunks).
        makeChunked(path, dims: [4], chunk: [4], configure: { H5Pset_deflate($0, 6) }, raw: deflateBomb(bytes: 4 << 20))
        #expect(family(path) == .limitExceeded)
    }

    /// A deflated chunk bomb behind fletcher32 (its checksum after the deflated bytes) is bounded too; before, any
    /// filter besides deflate and shuffle skipped the bound and libhdf5 inflated the bomb in full.
    @Test func chunkBombBehindFletcherIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        makeChunked(
            path, dims: [4], chunk: [4],
            configure: { dcpl in
                H5Pset_deflate(dcpl, 6)
                H5Pset_fletcher32(dcpl)
            }, raw: deflateBomb(bytes: 4 << 20) + [0, 0, 0, 0])  // the checksum is never reached
        #expect(family(path) == .limitExceeded)
    }

    /// A chunked dataset declaring 16 GiB with no chunk written: libhdf5 would allocate and fill the declared size
    /// from a file of a few kilobytes; it is refused before anything is allocated.
    @Test func chunkedDatasetWithoutChunksIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        makeChunked(path, dims: [1 << 32], chunk: [1 << 20])
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(size < 1 << 16)
        #expect(family(path) == .inconsistent)
    }

    /// Datasets `a.b/c` and `a/b.c` would both be the tensor `a.b.c` (names join groups with dots): refused, where a
    /// duplicate name used to trap later in code that keys tensors by name.
    @Test func dottedNameCollisionIsRefused() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        make(
            path,
            extra: { file in
                for (group, name) in [("a.b", "c"), ("a", "b.c")] {
                    let g = H5Gcreate2(file, group, 0, 0, 0)
                    var dims: [hsize_t] = [1]
                    let space = H5Screate_simple(1, &dims, nil)
                    let ds = H5Dcreate2(g, name, H5T_IEEE_F32LE_g, space, 0, 0, 0)
                    var value: Float = 1
                    H5Dwrite(ds, H5T_NATIVE_FLOAT_g, 0, 0, 0, &value)
                    H5Dclose(ds)
                    H5Sclose(space)
                    H5Gclose(g)
                }
            })
        let error = try #require(throws: ReadError.self) { try HDF5File(path: path) }
        #expect(error.family == .malformed && error.field == "a.b.c", "\(error)")
    }

    /// Files read from several threads at once, a malformed one among them: every read gives the values h5py wrote,
    /// every refusal is the same error (libhdf5 is entered under one lock, its error printing off on each thread).
    @Test func readsFromManyThreadsAtOnce() throws {
        let expected = try SafetensorsFile(path: FixturePaths.path("formats/expected.safetensors"))
        let scratch = try ScratchFolder()
        let broken = try scratch.write(
            "b.h5", [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 0xAB, count: 200))
        var failures: [String] = []
        let lock = NSLock()
        func fail(_ message: String) {
            lock.lock()
            failures.append(message)
            lock.unlock()
        }
        DispatchQueue.concurrentPerform(iterations: 12) { i in
            do {
                if i % 3 == 2 {
                    if family(broken) != .malformed { fail("thread \(i): the malformed file was not refused") }
                    return
                }
                let file = try HDF5File(path: FixturePaths.path("formats/weights.h5"))
                for name in file.names.shuffled() {
                    let ours = try file.tensor(named: name), theirs = try expected.tensor(named: "h5/" + name)
                    if try ours.doubles() != theirs.doubles() { fail("thread \(i): \(name) differs") }
                }
            } catch {
                fail("thread \(i): \(error)")
            }
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func notHDF5IsMalformed() throws {
        let scratch = try ScratchFolder()
        let path = try scratch.write(
            "a.h5", [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 0xAB, count: 200))
        #expect(family(path) == .malformed)
    }
}
