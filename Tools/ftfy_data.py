#!/usr/bin/env python3
"""Writes Sources/3-Model/ftfy/ftfy-data.json: the generated tables and regular expressions that ftfy 6.3.1 builds at
import time, dumped from the pinned ftfy so that the Swift port (Sources/3-Model/FTFY.swift) reads the very same
data. Deterministic, no network, no torch:

    Tools/.venv/bin/python Tools/ftfy_data.py

What the file holds (the algorithm itself is Swift code, not data):
- charmaps: for each of chardata.CHARMAP_ENCODINGS, in ftfy's order, the character each byte 0x00-0xFF decodes to
  (the sloppy codecs of bad_codecs/sloppy.py included: byte 0x1A is U+FFFD there), and the bytes the strict codec
  leaves undefined. Every character's encoding is checked to be the inverse of this table, and the table to give
  exactly chardata.ENCODING_REGEXES (possible_encoding).
- htmlEntities: chardata.HTML_ENTITIES (the HTML5 names that end in ';', plus ftfy's upper-case variants), keyed by
  the name between '&' and ';'; htmlInvalidCharrefs / htmlInvalidCodepoints: the tables of Python's html.unescape
  that ftfy's numeric references go through.
- widthMap (chardata.WIDTH_MAP, from Python's NFKC) and ligatures (chardata.LIGATURES).
- regexes: badness.BADNESS_RE, chardata.UTF8_DETECTOR_RE, fixes.ANSI_RE and the byte patterns ALTERED_UTF8_RE,
  fixes.A_GRAVE_WORD_RE and LOSSY_UTF8_RE, translated from Python's parse of each pattern into ICU syntax for
  NSRegularExpression: every character written as \\x{H}, Python's \\s, \\w and \\d written out as explicit sets of
  what they match in this Python (its Unicode database), '.' as [^\\n], '$' as (?=\\n?\\z), '^' as \\A. Byte patterns
  are for text whose characters U+0000-U+00FF stand for the bytes. Each translation is checked by re-emitting it in
  Python syntax and comparing its matches with the original pattern on many strings.
"""

from __future__ import annotations

import html
import html.entities
import json
import random
import re
import re._constants as C  # noqa: N812
import re._parser as P  # noqa: N812
import sys
import unicodedata
from pathlib import Path

import ftfy
from ftfy import badness, chardata, fixes

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "Sources" / "3-Model" / "ftfy" / "ftfy-data.json"
COMMAND = "Tools/.venv/bin/python Tools/ftfy_data.py"
MAXCHAR = 0x110000


def dump_lines(doc: dict, ensure_ascii: bool) -> str:
    """JSON with one top-level key per line, and one element per line inside top-level lists and objects."""
    def one(v: object) -> str:
        return json.dumps(v, ensure_ascii=ensure_ascii, separators=(",", ":"))

    lines = []
    for key, value in doc.items():
        head = one(key) + ":"
        if isinstance(value, list) and value:
            body = ",\n".join(one(v) for v in value)
            lines.append(f"{head}[\n{body}\n]")
        elif isinstance(value, dict) and value and key != "provenance":
            body = ",\n".join(one(k) + ":" + one(v) for k, v in value.items())
            lines.append(f"{head}{{\n{body}\n}}")
        else:
            lines.append(head + one(value))
    return "{\n" + ",\n".join(lines) + "\n}\n"


# ---------------------------------------------------------------------------------------------------------------
# Python regex → ICU, through Python's own parse of the pattern.

_category_cache: dict[object, list[tuple[int, int]]] = {}


def category_ranges(cat: object) -> list[tuple[int, int]]:
    """The code points a str pattern's \\s, \\w, \\d (or their negations) match in this Python, as ranges."""
    if cat not in _category_cache:
        probe = {
            C.CATEGORY_UNI_SPACE: r"\s", C.CATEGORY_UNI_WORD: r"\w", C.CATEGORY_UNI_DIGIT: r"\d",
            C.CATEGORY_SPACE: r"\s", C.CATEGORY_WORD: r"\w", C.CATEGORY_DIGIT: r"\d",
        }.get(cat)
        if probe is None:
            raise ValueError(f"unsupported category {cat}")
        rx = re.compile(probe)
        members = [cp for cp in range(MAXCHAR) if not 0xD800 <= cp <= 0xDFFF and rx.match(chr(cp))]
        _category_cache[cat] = to_ranges(members)
    return _category_cache[cat]


def to_ranges(members: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for cp in sorted(set(members)):
        if ranges and ranges[-1][1] + 1 == cp:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


class Emitter:
    """Writes a parsed pattern back out, in ICU syntax (icu=True) or Python syntax (for the self-check)."""

    def __init__(self, icu: bool, is_bytes: bool):
        self.icu, self.is_bytes = icu, is_bytes

    def char(self, cp: int) -> str:
        if self.icu:
            return "\\x{%X}" % cp
        if self.is_bytes:
            return "\\x%02x" % cp
        return "\\U%08x" % cp

    def charset(self, items: list, negate: bool = False) -> str:
        members: list[tuple[int, int]] = []
        for op, av in items:
            if op is C.LITERAL:
                members.append((av, av))
            elif op is C.RANGE:
                members.append(av)
            elif op is C.NEGATE:
                negate = True
            elif op is C.CATEGORY:
                if self.is_bytes:
                    raise ValueError("categories in byte patterns are not translated")
                members.extend(category_ranges(av))
            else:
                raise ValueError(f"unsupported set item {op}")
        merged = to_ranges([cp for lo, hi in members for cp in range(lo, hi + 1)])
        body = "".join(self.char(lo) if lo == hi else self.char(lo) + "-" + self.char(hi) for lo, hi in merged)
        return "[" + ("^" if negate else "") + body + "]"

    def seq(self, sub) -> str:
        return "".join(self.item(op, av) for op, av in sub)

    def item(self, op, av) -> str:
        if op is C.LITERAL:
            return self.char(av)
        if op is C.NOT_LITERAL:
            return "[^" + self.char(av) + "]"
        if op is C.ANY:  # no DOTALL: anything but \n
            return "[^" + self.char(10) + "]"
        if op is C.IN:
            return self.charset(av)
        if op is C.CATEGORY:
            return self.charset([(C.CATEGORY, av)])
        if op is C.BRANCH:
            return "(?:" + "|".join(self.seq(b) for b in av[1]) + ")"
        if op is C.SUBPATTERN:
            _group, add_flags, del_flags, p = av
            if add_flags or del_flags:
                raise ValueError("inline flags are not translated")
            return "(?:" + self.seq(p) + ")"
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, p = av
            inner = "(?:" + self.seq(p) + ")"
            if hi is C.MAXREPEAT:
                q = "*" if lo == 0 else "+" if lo == 1 else "{%d,}" % lo
            elif lo == hi:
                q = "{%d}" % lo
            elif (lo, hi) == (0, 1):
                q = "?"
            else:
                q = "{%d,%d}" % (lo, hi)
            return inner + q + ("?" if op is C.MIN_REPEAT else "+" if op is C.POSSESSIVE_REPEAT else "")
        if op is C.AT:
            if av in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):  # no MULTILINE: only the start of the text
                return "\\A"
            if av is C.AT_END:  # Python's '$': the end, or just before a final \n
                return "(?=" + self.char(10) + "?" + ("\\z" if self.icu else "\\Z") + ")"
            if av is C.AT_END_STRING:
                return "\\z" if self.icu else "\\Z"
            raise ValueError(f"unsupported anchor {av}")
        if op in (C.ASSERT, C.ASSERT_NOT):
            direction, p = av
            kind = ("=" if op is C.ASSERT else "!")
            return "(?" + ("<" if direction < 0 else "") + kind + self.seq(p) + ")"
        raise ValueError(f"unsupported opcode {op}")


def translate(rx: re.Pattern) -> tuple[str, re.Pattern]:
    """(the ICU pattern, the same translation in Python syntax compiled by re)."""
    is_bytes = isinstance(rx.pattern, bytes)
    pattern = rx.pattern.decode("latin-1") if is_bytes else rx.pattern
    tree = P.parse(pattern, rx.flags & ~re.UNICODE if is_bytes else rx.flags)
    icu = Emitter(icu=True, is_bytes=is_bytes).seq(tree)
    py = Emitter(icu=False, is_bytes=is_bytes).seq(tree)
    return icu, re.compile(py.encode("latin-1") if is_bytes else py)


def check_translation(name: str, original: re.Pattern, again: re.Pattern, samples: list) -> None:
    for s in samples:
        a = [(m.start(), m.end()) for m in original.finditer(s)]
        b = [(m.start(), m.end()) for m in again.finditer(s)]
        if a != b:
            raise SystemExit(f"{name}: translation differs on {s!r}: {a} vs {b}")


def str_samples(rng: random.Random) -> list[str]:
    """Strings that exercise the str patterns: every character the patterns name, mojibake, spaces, anchors."""
    alphabet = sorted({chr(cp) for cp in range(0x20, 0x250)} | {chr(cp) for cp in range(0x370, 0x460)}
                      | set("\n\t\r\x1b[;0123456789mABC ‘’“”•…€™‰†‡‹›№\u2028\u3000\u0660\u0663\ufffd\uf8ff")
                      | set("│┌┐┘├┤┬┼═║╒╓╔╕╖╗╘╙╚╛╜╝╞╟╠╡╢╣╤╥╦╧╨╩╪╫╬▀▄█▌▐░▒▓√±∂≠≤≥≈°¢πµ")
                      | {chr(cp) for cp in (0x2044, 0x2206, 0x220F, 0x2211, 0x221E, 0x2229, 0x222B, 0x2261, 0x2310,
                                           0x25CA, 0x20A7, 0xFB01, 0xFB02, 0x2015, 0x2116)})
    out = []
    for _ in range(40000):
        n = rng.randint(1, 12)
        out.append("".join(rng.choice(alphabet) for _ in range(n)))
    phrases = ["voilà le travail", "Ã la mode", "cafÃ©", "Ã\xa0 la", "ГўВЂВќ test", "â€œquotedâ€\x9d",
               "\x1b[36;44mblue\x1b[0m", "\x1b[٣m", "a Ã ", "Ã ", "x\n", "Â ", "ÃƒÂ©", "√±", "‚Äú", "вЂ™"]
    for p in phrases:
        for enc in ("utf-8",):
            out.append(p)
            out.append(p.encode(enc).decode("latin-1"))
            out.append(p.encode(enc).decode("windows-1252", errors="replace"))
    return out


def byte_samples(rng: random.Random) -> list[bytes]:
    alphabet = [0x20, 0x3F, 0x1A, 0x0A, 0x41, 0x61, 0x71, 0x73, 0x75, 0x65, 0x69, 0x6C, 0x6F] + list(range(0x80, 0x100))
    out = []
    for _ in range(60000):
        n = rng.randint(1, 10)
        out.append(bytes(rng.choice(alphabet) for _ in range(n)))
    for word in (b"\xc3 quele", b"\xc3 s ", b"\xc3 la", b"\xc3  ", b"\xc3 quilo", b"\xc3 quela", b"\xc3 s"):
        out.append(word)
    return out


# ---------------------------------------------------------------------------------------------------------------


def charmaps() -> list[dict]:
    out = []
    for enc in chardata.CHARMAP_ENCODINGS:
        table = [bytes([b]).decode(enc) for b in range(256)]
        assert all(len(c) == 1 for c in table), enc
        for b in list(range(0x00, 0x1A)) + list(range(0x1B, 0x80)):
            assert table[b] == chr(b) and chr(b).encode(enc) == bytes([b]), (enc, b)
        for b in list(range(0x80, 0x100)) + [0x1A]:
            assert table[b].encode(enc) == bytes([b]), (enc, b)
        allowed = set(chr(b) for b in list(range(0x00, 0x1A)) + list(range(0x1B, 0x80)))
        allowed |= {table[b] for b in list(range(0x80, 0x100)) + [0x1A]}
        rx = chardata.ENCODING_REGEXES[enc]
        for cp in list(range(0xD800)) + list(range(0xE000, 0x10000)) + [0x10000, 0x1F600, 0x10FFFF]:
            assert bool(rx.match(chr(cp))) == (chr(cp) in allowed), (enc, hex(cp))
        undefined = []
        if enc.startswith("sloppy-"):
            strict = enc[len("sloppy-"):]
            for b in range(256):
                try:
                    bytes([b]).decode(strict)
                except UnicodeDecodeError:
                    undefined.append(b)
        out.append({"name": enc, "decode": [ord(c) for c in table], "strictUndefined": undefined})
    # The strict codec ftfy decodes with after Latin-1 (the "Latin-1 meant as Windows-1252" step).
    assert [b for b in range(256) if not _decodes(bytes([b]), "windows-1252")] == \
        next(m["strictUndefined"] for m in out if m["name"] == "sloppy-windows-1252")
    return out


def _decodes(b: bytes, enc: str) -> bool:
    try:
        b.decode(enc)
        return True
    except UnicodeDecodeError:
        return False


def html_tables() -> tuple[dict, dict, list]:
    entities = {}
    for key, value in chardata.HTML_ENTITIES.items():
        assert key.startswith("&") and key.endswith(";"), key
        # Names longer than HTML_ENTITY_RE's 24 characters (&CounterClockwiseContourIntegral; …) can never match.
        if fixes.HTML_ENTITY_RE.fullmatch(key):
            entities[key[1:-1]] = value
    invalid_charrefs = {str(k): v for k, v in sorted(html._invalid_charrefs.items())}  # type: ignore[attr-defined]
    invalid_codepoints = sorted(html._invalid_codepoints)  # type: ignore[attr-defined]
    return entities, invalid_charrefs, invalid_codepoints


def main() -> None:
    rng = random.Random(61)
    entities, invalid_charrefs, invalid_codepoints = html_tables()
    patterns = {
        "badness": badness.BADNESS_RE,
        "utf8Detector": chardata.UTF8_DETECTOR_RE,
        "ansi": fixes.ANSI_RE,
        "alteredUTF8": chardata.ALTERED_UTF8_RE,
        "aGraveWord": fixes.A_GRAVE_WORD_RE,
        "lossyUTF8": chardata.LOSSY_UTF8_RE,
    }
    strs, byts = str_samples(rng), byte_samples(rng)
    regexes = {}
    for name, rx in patterns.items():
        icu, again = translate(rx)
        check_translation(name, rx, again, byts if isinstance(rx.pattern, bytes) else strs)
        regexes[name] = icu
    data = {
        "provenance": {
            "generator": COMMAND,
            "ftfy": ftfy.__version__,
            "python": sys.version.split()[0],
            "unicodedata": unicodedata.unidata_version,
            "note": "Tables and patterns ftfy builds at import time; the algorithm is ported in FTFY.swift.",
        },
        "charmaps": charmaps(),
        "htmlEntities": entities,
        "htmlInvalidCharrefs": invalid_charrefs,
        "htmlInvalidCodepoints": invalid_codepoints,
        "widthMap": {str(k): v for k, v in sorted(chardata.WIDTH_MAP.items())},
        "ligatures": {str(k): v for k, v in sorted(chardata.LIGATURES.items())},
        "controlChars": sorted(chardata.CONTROL_CHARS),
        "regexes": regexes,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = dump_lines(data, ensure_ascii=True)
    assert json.loads(text) == data
    OUT.write_text(text, encoding="ascii")
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
