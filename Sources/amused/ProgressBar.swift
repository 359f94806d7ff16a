// The one progress bar of the command line.

import Foundation

/// `unit done/total [=====     ] suffix` on stderr: redrawn in place on a terminal (ending the line when done ==
/// total); without a terminal, one line every `every` updates and at the end (none when `every` is 0).
struct ProgressBar {
    /// What is counted ("step", "tensor").
    let unit: String
    /// Without a terminal: print every this many updates (0: never).
    var every = 0
    /// Whether stderr is a terminal.
    let interactive = isatty(2) != 0

    /// Shows `done` of `total`.
    func update(_ done: Int, _ total: Int) { update(done, total, suffix: "") }

    /// Shows `done` of `total`, followed by `suffix`.
    func update(_ done: Int, _ total: Int, suffix: String) {
        let width = 30, filled = width * min(done, total) / max(total, 1)
        let line =
            "\(unit) \(done)/\(total) [" + String(repeating: "=", count: filled)
            + String(repeating: " ", count: width - filled) + "]" + suffix
        if interactive {
            FileHandle.standardError.write(Data(("\r" + line + (done == total ? "\n" : "")).utf8))
        } else if every > 0 && (done % every == 0 || done == total) {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}
