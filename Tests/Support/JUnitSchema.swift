// The JUnit XML schema CI services validate against (Jenkins' junit-10.xsd), as checks over a parsed document:
// which elements may appear where, which attributes each may carry and which it must, and the time format. Written
// from reading the schema; a document these checks accept is one that schema accepts.

import Foundation

#if canImport(FoundationXML)
import FoundationXML
#endif

/// Validates JUnit XML against the junit-10.xsd rules; returns the problems found (empty when valid).
public enum JUnitSchema {
    struct Rule {
        let children: Set<String>
        let attributes: Set<String>
        let required: Set<String>
        let timed: Bool
    }

    static let text: Set<String> = ["system-out", "system-err"]
    static let rules: [String: Rule] = [
        "testsuites": Rule(
            children: ["testsuite"], attributes: ["name", "time", "tests", "failures", "errors"],
            required: [], timed: true),
        "testsuite": Rule(
            children: ["testsuite", "properties", "testcase", "system-out", "system-err"],
            attributes: [
                "name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp",
                "hostname", "id", "package", "file", "log", "url",
            ],
            required: ["name", "tests", "failures", "errors"], timed: true),
        "properties": Rule(children: ["property"], attributes: [], required: [], timed: false),
        "property": Rule(children: [], attributes: ["name", "value"], required: ["name", "value"], timed: false),
        "testcase": Rule(
            children: [
                "skipped", "error", "failure", "rerunFailure", "rerunError", "flakyFailure",
                "flakyError", "system-out", "system-err",
            ],
            attributes: ["name", "time", "classname", "group"], required: ["name"], timed: false),
        "failure": Rule(children: [], attributes: ["type", "message"], required: [], timed: false),
        "error": Rule(children: [], attributes: ["type", "message"], required: [], timed: false),
        "skipped": Rule(children: [], attributes: ["type", "message"], required: [], timed: false),
        "system-out": Rule(children: [], attributes: [], required: [], timed: false),
        "system-err": Rule(children: [], attributes: [], required: [], timed: false),
    ]

    /// The schema's SUREFIRE_TIME: `(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?`, i.e. digits (with optional
    /// thousands commas) and an optional fraction.
    static func isTime(_ s: String) -> Bool {
        s.range(of: #"^(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?$"#, options: .regularExpression) != nil
    }

    /// The problems of `xml` (well-formedness first, then the schema's rules from the root down).
    public static func problems(_ xml: String) -> [String] {
        let document: XMLDocument
        do { document = try XMLDocument(xmlString: xml, options: []) } catch {
            return ["not well-formed XML: \(error)"]
        }
        guard let root = document.rootElement() else { return ["no root element"] }
        guard root.name == "testsuites" || root.name == "testsuite" else { return ["root is <\(root.name ?? "")>"] }
        var problems: [String] = []
        var stack: [XMLElement] = [root]
        while let e = stack.popLast() {
            let name = e.name ?? ""
            guard let rule = rules[name] else {
                problems.append("<\(name)> is not a JUnit element")
                continue
            }
            let attributes = Set((e.attributes ?? []).compactMap(\.name))
            for a in attributes.subtracting(rule.attributes) { problems.append("<\(name)> may not carry \(a)") }
            for a in rule.required.subtracting(attributes) { problems.append("<\(name)> lacks required \(a)") }
            if rule.timed, let t = e.attribute(forName: "time")?.stringValue, !isTime(t) {
                problems.append("<\(name)> time \"\(t)\" is not a schema time")
            }
            for child in e.children ?? [] {
                switch child.kind {
                case .element:
                    let c = child as! XMLElement
                    if !rule.children.contains(c.name ?? "") { problems.append("<\(c.name ?? "")> inside <\(name)>") }
                    stack.append(c)
                case .text where !(child.stringValue ?? "").allSatisfy(\.isWhitespace):
                    // Mixed content only where the schema allows it.
                    if !["failure", "error", "skipped"].contains(name) && !text.contains(name) {
                        problems.append("text inside <\(name)>")
                    }
                default: continue
                }
            }
        }
        return problems
    }
}
