// `amused-fuzz`: built by Tools/fuzz.sh with -sanitize=fuzzer,address and AMUSED_LIBFUZZER defined, it is a
// libFuzzer binary whose target is chosen by AMUSED_FUZZ_TARGET; built plainly, it replays inputs through a target
// (`amused-fuzz TARGET FILE|DIR …`) or lists the targets (`amused-fuzz --list`).

import AmusedFuzzTargets
import Foundation

#if AMUSED_LIBFUZZER
nonisolated(unsafe) let selected: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["AMUSED_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTargets.named(name) else {
        FileHandle.standardError.write(Data("set AMUSED_FUZZ_TARGET to one of: \(FuzzTargets.all.map(\.name))\n".utf8))
        exit(2)
    }
    return target
}()

/// libFuzzer's entry point: one input through the selected target.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// SwiftPM links an executable's entry point as `<module>_main`; here it hands over to libFuzzer's driver.
@_cdecl("amused_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var arguments = argv
    FuzzTargets.prepare()
    _ = selected
    return runFuzzerDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
#else
@main
struct Replay {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--list" || args.isEmpty {
            for t in FuzzTargets.all { print(t.name.padding(toLength: 16, withPad: " ", startingAt: 0) + t.summary) }
            return
        }
        guard let target = FuzzTargets.named(args[0]) else {
            FileHandle.standardError.write(Data("unknown target \(args[0]); amused-fuzz --list names them\n".utf8))
            exit(2)
        }
        var count = 0
        for arg in args.dropFirst() {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: arg, isDirectory: &isDir) else { continue }
            let files =
                isDir.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: arg)) ?? []).sorted().map { arg + "/" + $0 }
                : [arg]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                data.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("\(target.name): \(count) inputs replayed")
    }
}
#endif
