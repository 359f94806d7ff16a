// swift-tools-version: 6.0
// AmusedKit: read → map → bind → run → quantize → verify → pack, for aMUSEd checkpoints.
import PackageDescription

let package = Package(
    name: "AmusedKit",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "AmusedKit", targets: ["AmusedTensors", "AmusedRead", "AmusedMap", "AmusedBind", "AmusedModel",
                                              "AmusedQuantize", "AmusedVerify", "AmusedPack", "AmusedTrain",
                                              "AmusedImage", "AmusedKernels"]),
        .executable(name: "amused", targets: ["amused"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        // C libraries from Debian's -dev packages, found through pkg-config.
        .systemLibrary(name: "CJSONC", path: "Sources/C/CJSONC", pkgConfig: "json-c",
                       providers: [.apt(["libjson-c-dev"]), .brew(["json-c"])]),
        .systemLibrary(name: "CZstd", path: "Sources/C/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/C/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"]), .brew(["hdf5"])]),
        // JPEG decoding through libjpeg-turbo (libjpeg-dev), the decoder Pillow uses.
        .target(name: "CJPEG", path: "Sources/C/CJPEG", linkerSettings: [.linkedLibrary("jpeg")]),
        // AmusedKit's own AVX-512 SGEMM (x86-64), used in optimised builds on CPUs that have AVX-512F; BLAS otherwise.
        .target(name: "CGemm", path: "Sources/C/CGemm"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/C/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // Stage 0: the tensor type every stage shares.
        .target(name: "AmusedTensors", path: "Sources/0-Tensors"),
        // Stage 1: read weights from files (safetensors today; PyTorch, HDF5, NumPy, GGUF next).
        .target(name: "AmusedRead",
                dependencies: ["AmusedTensors", "CJSONC", "CHDF5"],
                path: "Sources/1-Read"),
        // Stage 2: map. Name maps as data (maps/*.json, Schemas/name-map.schema.json) and a ledger of every tensor.
        .target(name: "AmusedMap", dependencies: ["AmusedTensors", "AmusedRead"], path: "Sources/2-Map",
                resources: [.copy("maps")]),
        // Stage 3: bind a checkpoint's tensors to the graph's parameters, strictly; configs and tokenizer files.
        .target(name: "AmusedBind", dependencies: ["AmusedTensors", "AmusedRead", "AmusedMap", "AmusedModel", "AmusedKernels"],
                path: "Sources/3-Bind"),
        // Stage 4: run. The canonical aMUSEd graph (diffusers names), the tokenizer; never imports formats.
        .target(name: "AmusedModel", dependencies: ["AmusedTensors", "AmusedKernels"], path: "Sources/4-Run"),
        // Stage 5: quantize. Policies as data (policies/*.json, Schemas/quant-policy.schema.json) and the plan.
        .target(name: "AmusedQuantize", dependencies: ["AmusedTensors", "AmusedRead", "AmusedModel"],
                path: "Sources/5-Quantize", resources: [.copy("policies")]),
        // Stage 7: pack. The .amused bundle (Schemas/bundle-manifest.schema.json): writer, untrusted reader, conversion.
        .target(name: "AmusedPack",
                dependencies: ["AmusedTensors", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedQuantize", "CZstd",
                               .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/7-Pack"),
        // Stage 6: verify parity against reference records made by the PyTorch reference.
        .target(name: "AmusedVerify", dependencies: ["AmusedTensors", "AmusedRead", "AmusedBind", "AmusedModel"],
                path: "Sources/6-Verify", resources: [.copy("tolerance-profiles.json")]),
        // Stage 8: train. LoRA fine-tuning (train_amused.py --use_lora): masking, AdamW, the LoRA file and checkpoints.
        .target(name: "AmusedTrain",
                dependencies: ["AmusedTensors", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedImage"],
                path: "Sources/8-Train"),
        // Images in and out of the pipelines: PNG, Pillow-compatible Lanczos resampling, bounded inflate.
        .target(name: "AmusedImage", dependencies: ["AmusedTensors", "CJPEG"], path: "Sources/Image"),
        // The one door to BLAS and the numeric kernels (OpenBLAS on Linux, Accelerate on Apple platforms).
        .target(name: "AmusedKernels",
                dependencies: ["CGemm", .target(name: "COpenBLAS", condition: .when(platforms: [.linux]))],
                path: "Sources/Kernels"),
        // The command line: a thin skin over the libraries.
        .executableTarget(name: "amused",
                          dependencies: ["AmusedTensors", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedVerify",
                                         "AmusedQuantize", "AmusedPack", "AmusedTrain",
                                         "AmusedImage", "AmusedKernels", "CZstd",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "Sources/amused"),

        // Fuzzing: one entry point per untrusted input (replayed by the tests), and the libFuzzer driver that
        // Tools/fuzz.sh builds with -sanitize=fuzzer,address.
        .target(name: "AmusedFuzzTargets",
                dependencies: ["AmusedTensors", "AmusedRead", "AmusedMap", "AmusedBind", "AmusedModel", "AmusedQuantize",
                               "AmusedVerify", "AmusedPack", "AmusedImage"],
                path: "Tests/Fuzz/Targets"),
        .executableTarget(name: "amused-fuzz", dependencies: ["AmusedFuzzTargets"], path: "Tests/Fuzz/Driver"),

        // Fixture paths and temporary folders shared by the test targets.
        .target(name: "AmusedTestSupport", dependencies: ["AmusedTensors", "AmusedRead"], path: "Tests/Support"),
        .testTarget(name: "AmusedTensorsTests", dependencies: ["AmusedTensors", "AmusedTestSupport"],
                    path: "Tests/AmusedTensorsTests"),
        .testTarget(name: "AmusedReadTests",
                    dependencies: ["AmusedRead", "AmusedTensors", "AmusedTestSupport", "CHDF5",
                                   .product(name: "Crypto", package: "swift-crypto")],
                    path: "Tests/AmusedReadTests",
                    // The HDF5 tests build hostile files through libhdf5's C globals (H5T_IEEE_F32LE_g, …), which
                    // Swift 6 mode refuses to read; the tests run serially.
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "AmusedModelTests",
                    dependencies: ["AmusedModel", "AmusedBind", "AmusedVerify", "AmusedRead", "AmusedTensors",
                                   "AmusedTestSupport"],
                    path: "Tests/AmusedModelTests"),
        .testTarget(name: "AmusedTrainTests",
                    dependencies: ["AmusedTrain", "AmusedModel", "AmusedBind", "AmusedRead", "AmusedTensors", "AmusedImage",
                                   "AmusedVerify", "AmusedTestSupport"],
                    path: "Tests/AmusedTrainTests"),
        .testTarget(name: "AmusedImageTests", dependencies: ["AmusedImage", "AmusedRead", "AmusedTensors", "AmusedTestSupport"],
                    path: "Tests/AmusedImageTests"),
        .testTarget(name: "AmusedMapTests",
                    dependencies: ["AmusedMap", "AmusedBind", "AmusedModel", "AmusedRead", "AmusedTensors", "AmusedVerify",
                                   "AmusedTestSupport"],
                    path: "Tests/AmusedMapTests"),
        .testTarget(name: "AmusedPackTests",
                    dependencies: ["AmusedPack", "AmusedQuantize", "AmusedBind", "AmusedModel", "AmusedVerify", "AmusedRead",
                                   "AmusedTensors", "AmusedTestSupport", "AmusedImage", "AmusedKernels", "CZstd",
                                   .product(name: "Crypto", package: "swift-crypto")],
                    path: "Tests/AmusedPackTests"),
        .testTarget(name: "AmusedFuzzTests", dependencies: ["AmusedFuzzTargets", "AmusedRead", "AmusedTestSupport"],
                    path: "Tests/AmusedFuzzTests"),
        .testTarget(name: "AmusedKernelsTests", dependencies: ["AmusedKernels", "CGemm"],
                    path: "Tests/AmusedKernelsTests"),
        .testTarget(name: "AmusedCLITests", dependencies: ["AmusedTensors", "AmusedRead", "AmusedImage", "AmusedTestSupport", "CGemm"],
                    path: "Tests/AmusedCLITests"),
    ]
)
