// Where `generate` and `verify` get their model: a checkpoint (folder or file, through the name maps) or a `.amused`
// bundle (checked against its digests, weights run as stored).

import AmusedBind
import AmusedCore
import AmusedPack
import AmusedRead
import Foundation

enum ModelSource {
    /// True when `path` is a bundle.
    static func isBundle(_ path: String) -> Bool { AmusedBundle.isBundle(path) }

    /// The components at `path`; LoRA, layout and variant options apply to checkpoints only (a bundle has its LoRA
    /// baked in at conversion).
    static func components(_ path: String, variant: String?, lora: LoRAOptions, layout: LayoutOptions) throws
        -> AmusedComponents
    {
        if isBundle(path) {
            guard lora.lora == nil, variant == nil, layout.layout == nil, layout.configs == nil else {
                throw BundleError(
                    .unsupported, path: path,
                    "--lora, --variant, --layout and --configs apply to checkpoints; "
                        + "a bundle's LoRA is baked in by amused convert --lora")
            }
            return try AmusedComponents(bundle: try AmusedBundle(path: path))
        }
        return try AmusedComponents(
            path: path, variant: variant, lora: try lora.fusion(), layout: layout.layout,
            configs: layout.configs)
    }
}
