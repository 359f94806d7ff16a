// The C libraries behind the readers, as `amused version` reports them.

import CHDF5
import CJSONC

/// The versions of the C libraries the readers are linked against, from the libraries themselves.
public enum ReadLibraries {
    /// `[("json-c", …), ("hdf5", …)]`.
    public static var versions: [(String, String)] {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        H5get_libversion(&major, &minor, &release)
        return [("json-c", String(cString: json_c_version())), ("hdf5", "\(major).\(minor).\(release)")]
    }
}
