// swift-tools-version: 6.0
// AmusedKit: read → map → bind → quantize → verify → pack (and run, and fine-tune) for aMUSEd checkpoints.
import PackageDescription

let package = Package(
    name: "AmusedKit",
    platforms: [.macOS(.v14)],
    products: [
        .library(
            name: "AmusedKit",
            targets: [
                "AmusedCore", "AmusedRead", "AmusedMap", "AmusedModel", "AmusedBind",
                "AmusedQuantize", "AmusedVerify", "AmusedPack", "AmusedConvert",
                "AmusedTrain", "AmusedImage", "AmusedKernels",
            ]),
        .executable(name: "amused", targets: ["amused"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        // C libraries from Debian's -dev packages, found through pkg-config.
        .systemLibrary(
            name: "CJSONC", path: "Sources/C/CJSONC", pkgConfig: "json-c",
            providers: [.apt(["libjson-c-dev"]), .brew(["json-c"])]),
        .systemLibrary(
            name: "CZstd", path: "Sources/C/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
        .systemLibrary(
            name: "CHDF5", path: "Sources/C/CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"]), .brew(["hdf5"])]),
        // JPEG decoding through libjpeg-turbo (libjpeg-dev), the decoder Pillow uses.
        .target(name: "CJPEG", path: "Sources/C/CJPEG", linkerSettings: [.linkedLibrary("jpeg")]),
        // AmusedKit's own C kernels (x86-64): the SGEMM (AVX-512 in optimised builds on CPUs with AVX-512F, AVX2 on
        // request; BLAS otherwise), the int8 (VNNI or AVX2) and bf16 products, and the element-wise passes at AVX-512
        // or AVX2 width.
        .target(name: "CGemm", path: "Sources/C/CGemm"),
        .systemLibrary(
            name: "CZlib", path: "Sources/C/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]),
        // glibc's malloc.h (mallopt), for Kernels.configureAllocator on Linux.
        .systemLibrary(name: "CAllocator", path: "Sources/C/CAllocator"),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/C/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),

        // The pipeline, in dependency order: each numbered stage imports only stages numbered below it.
        // 0 core types and I/O: tensors, dtypes, checked sizes, mapped and atomic files, checksums, the stored form of
        // quantized weights.
        .target(name: "AmusedCore", dependencies: ["CZlib"], path: "Sources/0-Core"),
        // 1 read: the weight formats (safetensors, PyTorch zip + pickle, NumPy, GGUF, HDF5 in a helper process), strict
        // JSON, checkpoint layouts, the Hugging Face cache; the safetensors and GGUF writers.
        .target(
            name: "AmusedRead",
            dependencies: ["AmusedCore", "CJSONC", "CHDF5", .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/1-Read"),
        // 2 map: name maps as data (maps/*.json, Schemas/name-map.schema.json) and a ledger of every tensor.
        .target(
            name: "AmusedMap", dependencies: ["AmusedCore", "AmusedRead"], path: "Sources/2-Map",
            resources: [.copy("maps")]),
        // 3 model: the canonical aMUSEd graph (diffusers names), tokenizer, scheduler, torch's RNG, the pipeline, and
        // the backward passes fine-tuning needs. Never imports a file format.
        // ftfy/ftfy-data.json: the tables and patterns ftfy builds at import time, for the tokenizer's text cleaning
        // (written by Tools/ftfy_data.py).
        .target(
            name: "AmusedModel", dependencies: ["AmusedCore", "AmusedKernels"], path: "Sources/3-Model",
            resources: [.copy("ftfy")]),
        // 4 bind: configs onto the graph, strict binding of tensors to parameters, the checked import of a checkpoint
        // in its canonical form, LoRA fusion.
        .target(
            name: "AmusedBind",
            dependencies: ["AmusedCore", "AmusedRead", "AmusedMap", "AmusedModel", "AmusedKernels"],
            path: "Sources/4-Bind"),
        // 5 quantize: policies as data (policies/*.json, Schemas/quant-policy.schema.json), the plan, the encoders.
        .target(
            name: "AmusedQuantize", dependencies: ["AmusedCore", "AmusedRead", "AmusedModel"],
            path: "Sources/5-Quantize", resources: [.copy("policies")]),
        // 6 verify: parity against reference records made by the PyTorch reference; tolerance profiles; JUnit.
        .target(
            name: "AmusedVerify", dependencies: ["AmusedCore", "AmusedRead", "AmusedBind", "AmusedModel"],
            path: "Sources/6-Verify", resources: [.copy("tolerance-profiles.json")]),
        // 7 pack: the .amused bundle (Schemas/bundle-manifest.schema.json): writer, untrusted reader, re-encoding.
        .target(
            name: "AmusedPack",
            dependencies: [
                "AmusedCore", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedQuantize", "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/7-Pack"),
        // 8 convert: the main job as library code (read → map → bind → quantize → verify → pack) and the export of a
        // checkpoint as a diffusers folder.
        .target(
            name: "AmusedConvert",
            dependencies: [
                "AmusedCore", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedQuantize", "AmusedVerify",
                "AmusedPack",
            ],
            path: "Sources/8-Convert"),
        // 9 train: LoRA fine-tuning (train_amused.py --use_lora): masking, AdamW, the LoRA file and checkpoints.
        .target(
            name: "AmusedTrain",
            dependencies: ["AmusedCore", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedImage"],
            path: "Sources/9-Train"),
        // Beside the stages: images in and out (PNG through zlib, JPEG through libjpeg-turbo, Pillow's Lanczos) and
        // the one door to BLAS and the numeric kernels (OpenBLAS on Linux, Accelerate on Apple platforms).
        .target(name: "AmusedImage", dependencies: ["AmusedCore", "CJPEG"], path: "Sources/Image"),
        .target(
            name: "AmusedKernels",
            dependencies: [
                "CGemm", .target(name: "COpenBLAS", condition: .when(platforms: [.linux])),
                .target(name: "CAllocator", condition: .when(platforms: [.linux])),
            ],
            path: "Sources/Kernels"),
        // The command line: a thin skin over the libraries.
        .executableTarget(
            name: "amused",
            dependencies: [
                "AmusedCore", "AmusedRead", "AmusedBind", "AmusedModel", "AmusedVerify",
                "AmusedQuantize", "AmusedPack", "AmusedConvert", "AmusedTrain",
                "AmusedImage", "AmusedKernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/amused"),

        // Fuzzing: one entry point per untrusted input (replayed by the tests), and the libFuzzer driver that
        // Tools/fuzz.sh builds with -sanitize=fuzzer,address.
        .target(
            name: "AmusedFuzzTargets",
            dependencies: [
                "AmusedCore", "AmusedRead", "AmusedMap", "AmusedBind", "AmusedModel", "AmusedQuantize",
                "AmusedVerify", "AmusedPack", "AmusedImage",
            ],
            path: "Tests/Fuzz/Targets"),
        .executableTarget(name: "amused-fuzz", dependencies: ["AmusedFuzzTargets"], path: "Tests/Fuzz/Driver"),

        // Fixture paths and temporary folders shared by the test targets.
        .target(
            name: "AmusedTestSupport",
            dependencies: ["AmusedCore", "AmusedRead", .product(name: "Crypto", package: "swift-crypto")],
            path: "Tests/Support"),
        .testTarget(
            name: "AmusedCoreTests", dependencies: ["AmusedCore", "AmusedTestSupport"],
            path: "Tests/AmusedCoreTests"),
        .testTarget(
            name: "AmusedReadTests",
            dependencies: [
                "AmusedRead", "AmusedCore", "AmusedTestSupport", "CHDF5",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/AmusedReadTests",
            // The HDF5 tests build hostile files through libhdf5's C globals (H5T_IEEE_F32LE_g, …), which
            // Swift 6 mode refuses to read; the tests run serially.
            swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(
            name: "AmusedModelTests",
            dependencies: [
                "AmusedModel", "AmusedBind", "AmusedVerify", "AmusedRead", "AmusedCore", "AmusedKernels",
                "AmusedTestSupport",
            ],
            path: "Tests/AmusedModelTests"),
        .testTarget(
            name: "AmusedBindTests",
            dependencies: [
                "AmusedBind", "AmusedModel", "AmusedConvert", "AmusedVerify", "AmusedRead",
                "AmusedCore", "AmusedTestSupport",
            ],
            path: "Tests/AmusedBindTests"),
        .testTarget(
            name: "AmusedConvertTests",
            dependencies: [
                "AmusedConvert", "AmusedPack", "AmusedQuantize", "AmusedBind", "AmusedModel",
                "AmusedVerify", "AmusedRead", "AmusedCore", "AmusedTestSupport", "AmusedImage",
                "AmusedKernels",
            ],
            path: "Tests/AmusedConvertTests"),
        .testTarget(
            name: "AmusedTrainTests",
            dependencies: [
                "AmusedTrain", "AmusedModel", "AmusedBind", "AmusedRead", "AmusedCore", "AmusedImage",
                "AmusedVerify", "AmusedTestSupport",
            ],
            path: "Tests/AmusedTrainTests"),
        .testTarget(
            name: "AmusedImageTests", dependencies: ["AmusedImage", "AmusedRead", "AmusedCore", "AmusedTestSupport"],
            path: "Tests/AmusedImageTests"),
        .testTarget(
            name: "AmusedMapTests",
            dependencies: [
                "AmusedMap", "AmusedBind", "AmusedConvert", "AmusedModel", "AmusedRead", "AmusedCore",
                "AmusedVerify", "AmusedTestSupport",
            ],
            path: "Tests/AmusedMapTests"),
        .testTarget(
            name: "AmusedQuantizeTests",
            dependencies: ["AmusedQuantize", "AmusedRead", "AmusedCore", "AmusedTestSupport"],
            path: "Tests/AmusedQuantizeTests"),
        .testTarget(
            name: "AmusedPackTests",
            dependencies: [
                "AmusedPack", "AmusedQuantize", "AmusedBind", "AmusedModel", "AmusedVerify", "AmusedRead",
                "AmusedCore", "AmusedTestSupport", "AmusedImage", "AmusedKernels", "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/AmusedPackTests"),
        .testTarget(
            name: "AmusedFuzzTests",
            dependencies: ["AmusedCore", "AmusedFuzzTargets", "AmusedRead", "AmusedTestSupport"],
            path: "Tests/AmusedFuzzTests"),
        .testTarget(
            name: "AmusedKernelsTests", dependencies: ["AmusedKernels", "CGemm"],
            path: "Tests/AmusedKernelsTests"),
        .testTarget(
            name: "AmusedCLITests",
            dependencies: ["AmusedCore", "AmusedRead", "AmusedImage", "AmusedTestSupport", "CGemm"],
            path: "Tests/AmusedCLITests"),
    ]
)
