// A verify report as JUnit XML, the form CI services (GitHub Actions reporters, GitLab, Jenkins, Buildkite) display:
// one <testsuite> per record, one <testcase> per record case with its time; a failing case carries the first tensor
// out of tolerance and its metrics, a skipped case is <skipped/>. The elements and attributes are those of the JUnit
// schema CI services validate against (Jenkins' junit-10.xsd): testsuites > testsuite[name, tests, failures, errors,
// skipped, time] > testcase[name, classname, time] > failure | skipped | system-out.

import AmusedCore
import Foundation

extension VerifyReport {
    /// The report as a JUnit XML document.
    public var junitXML: String {
        let failures = cases.filter { $0.status == .fail }.count
        let seconds = cases.reduce(0) { $0 + $1.seconds }
        // A skipped case fails the run unless skips are allowed; CI then shows it as a failure, not a skip.
        let skippedFail = !skipsAllowed
        var out = #"<?xml version="1.0" encoding="UTF-8"?>"# + "\n"
        out +=
            "<testsuites name=\"amused verify\" tests=\"\(cases.count)\" failures=\"\(failures + (skippedFail ? skippedCount : 0))\" "
            + "errors=\"0\" time=\"\(Self.time(seconds))\">\n"
        out +=
            "  <testsuite name=\"\(Self.escape(record))\" tests=\"\(cases.count)\" "
            + "failures=\"\(failures + (skippedFail ? skippedCount : 0))\" errors=\"0\" "
            + "skipped=\"\(skippedFail ? 0 : skippedCount)\" time=\"\(Self.time(seconds))\">\n"
        out += "    <properties>\n"
        for (name, value) in [("model", model), ("profile", profile), ("record", record)] {
            out += "      <property name=\"\(name)\" value=\"\(Self.escape(value))\"/>\n"
        }
        out += "    </properties>\n"
        for c in cases {
            out +=
                "    <testcase name=\"\(Self.escape(c.name))\" classname=\"\(Self.escape("amused.verify.\(c.kind)"))\" "
                + "time=\"\(Self.time(c.seconds))\""
            let details = Self.details(c)
            switch c.status {
            case .pass:
                out += ">\n      <system-out>\(Self.escape(details))</system-out>\n    </testcase>\n"
            case .fail:
                let first = c.note.map { "first tensor out of tolerance: \($0)" } ?? "parity failed"
                out +=
                    ">\n      <failure type=\"parity\" message=\"\(Self.escape(first))\">\(Self.escape(details))</failure>\n"
                    + "    </testcase>\n"
            case .skipped:
                let why = "not run: \(c.note ?? "unknown reason")"
                out +=
                    skippedFail
                    ? ">\n      <failure type=\"skipped\" message=\"\(Self.escape(why + " (--allow-skip accepts it)"))\"/>\n"
                        + "    </testcase>\n"
                    : ">\n      <skipped message=\"\(Self.escape(why))\"/>\n    </testcase>\n"
            }
        }
        return out + "  </testsuite>\n</testsuites>\n"
    }

    /// The metrics of one case, one line each, as the text report prints them.
    static func details(_ c: CaseResult) -> String {
        var lines = c.metrics.map { m in
            if let a = m.agreement {
                return "\(m.pass ? "ok  " : "FAIL") \(m.tensor) agreement \(String(format: "%.6f", a))"
            }
            return String(
                format: "%@ %@ max abs %.3e mean abs %.3e cosine %.9f (max |ref| %.3g; %@)",
                m.pass ? "ok  " : "FAIL", m.tensor, m.maxAbs, m.meanAbs, m.cosine, m.maxReference, m.criterion)
        }
        if let steps = c.tokenAgreementPerStep {
            lines.append("token agreement per step: " + steps.map { String(format: "%.4f", $0) }.joined(separator: " "))
        }
        for k in c.quantization?.checks ?? [] {
            lines.append(
                "\(k.pass ? "ok  " : "FAIL") \(k.name) \(String(format: "%.4g", k.value)) "
                    + "\(k.atMost ? "≤" : "≥") \(k.bound)")
        }
        return lines.joined(separator: "\n")
    }

    /// Seconds as the schema's time type wants them (digits, a point, digits).
    static func time(_ seconds: Double) -> String { String(format: "%.3f", max(0, seconds.isFinite ? seconds : 0)) }

    /// `s` escaped for XML text and attribute values; characters XML 1.0 cannot carry become U+FFFD.
    static func escape(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "\n": out += "&#10;"
            case "\t": out += "&#9;"
            case _ where u.value < 0x20 || (0xFFFE...0xFFFF).contains(u.value): out += "\u{FFFD}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
