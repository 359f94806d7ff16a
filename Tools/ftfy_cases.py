#!/usr/bin/env python3
"""Writes Fixtures/tokenizer/ftfy-prompts.json: prompts aimed at ftfy's text cleaning, with what ftfy.fix_text (6.3.1,
default configuration) returns for each and the 77 input_ids transformers' slow CLIPTokenizer (ftfy installed,
loaded as Tools/make_fixtures.py loads it) gives with padding="max_length", truncation=True, max_length=77.
Deterministic (fixed seed); the one download is ftfy's own source release from PyPI (for its test cases):

    Tools/.venv/bin/python Tools/ftfy_cases.py

The prompts:
- ftfy's own test cases: tests/test_cases.json of the pinned release's source distribution (each original text and
  what ftfy's tests expect it fixed to);
- every string in the doctest examples of ftfy's docstrings (inputs and printed outputs; byte strings both as
  bytes→Latin-1 and bytes→Windows-1252 mojibake), and the examples its docstrings and comments give in prose;
- mojibake: phrases in many languages encoded as UTF-8 and decoded as each encoding ftfy tries (Latin-1,
  Windows-1250/1251/1252/1253/1254/1257, ISO-8859-2, MacRoman, cp437; strict decoders with U+FFFD or '?' for
  undefined bytes, and sloppy ones), twice over, partly (one word, one line of several), with U+00A0 turned into
  spaces, in upper case, CESU-8 and Java's NUL;
- HTML entities: named (HTML5's rare ones, upper-cased ones), numeric in decimal and hex, invalid references,
  without semicolons, too long, with a '<' in the same or an earlier line (the "auto" rule);
- control characters (C0, C1, DEL, BOM, deprecated format controls), terminal escapes, line breaks (\\r\\n, \\r,
  U+2028, U+2029, U+0085), surrogate references, emoji ZWJ and tag sequences, mixed scripts, full/half-width forms,
  ligatures, curly quotes, NFC and NFD forms, Greek capitals (Python's final sigma in str.lower);
- random mixtures of all of these.

The ids are stored without the trailing run of 49407 (<|endoftext|>, which is also the padding token): pad back to 77
with 49407.

With --update-manifest, the file's entry in Fixtures/MANIFEST.json (size, SHA-256) and its provenance under "also" are
written in place, as Tools/make_dtype_fixtures.py does for Fixtures/dtypes/ (the fixture test pins every file).
Tools/make_fixtures.py rebuilds Fixtures/tokenizer/ from scratch, so run this again after it.
"""

from __future__ import annotations

import argparse
import ast
import doctest
import hashlib
import importlib
import json
import random
import sys
import tempfile
import unicodedata
from pathlib import Path

import ftfy
import regex
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amused_reference import REPO, clip_tokenizer  # noqa: E402
from ftfy_data import dump_lines  # noqa: E402  (one JSON layout for both ftfy files)

SEED = 20251202
COMMAND = "Tools/.venv/bin/python Tools/ftfy_cases.py"
OUT = REPO / "Fixtures" / "tokenizer" / "ftfy-prompts.json"
PAD = 49407

# The single-byte encodings ftfy tries (chardata.CHARMAP_ENCODINGS, without the sloppy- prefix), plus the strict
# Windows-1252 that real software uses.
MOJIBAKE_ENCODINGS = [
    "latin-1", "windows-1252", "windows-1251", "windows-1250", "windows-1253", "windows-1254", "windows-1257",
    "iso-8859-2", "macroman", "cp437",
]

PHRASES = [
    # Latin script
    "café crème brûlée", "naïve façade", "voilà le travail", "à la mode", "où est la bibliothèque ?",
    "Ça va très bien, merci", "l'été dernier à Montréal", "Größe und Maß", "schön über Straße", "Äpfel, Öl, Übung",
    "Fußgängerübergänge", "mañana en España", "¿Qué tal? ¡Muy bien!", "pingüino año señor", "ação e coração",
    "às vezes àquele lugar", "São Paulo não é longe", "Pražský hrad při západu slunce", "příliš žluťoučký kůň",
    "Zażółć gęślą jaźń", "Łódź i Kraków", "Ökonómia és fűszerek", "árvíztűrő tükörfúrógép", "Şişli'de güzel bir gün",
    "İstanbul ve İzmir", "ığdır çiğköfte", "Lietuvių kalba ąčęėįšųūž", "Latviešu valoda: ģērbšanās",
    "România și Moldova", "Hrvatska čćđšž", "Dansk: rødgrød med fløde", "Íslenska: þjóð og ætt", "Ärzte für Übersee",
    "Cliché résumé fiancée", "Zoë and Chloë", "Bjørn Ørsted", "Ångström", "œuvre de cœur", "Encyclopædia",
    "fiancé’s “quoted” café", "déjà vu — naïveté…", "10 € pour 2 kg", "£5 and ¥300", "© 2024 Ünïcödé™",
    # Greek, Cyrillic
    "Καλημέρα κόσμε", "ΚΑΛΗΜΕΡΑ ΚΟΣΜΕ", "Η ΟΔΥΣΣΕΙΑ ΤΟΥ ΟΔΥΣΣΕΑ", "ελληνικά γράμματα", "ΣΟΦΟΣ ΛΟΓΟΣ",
    "Привет, мир", "Съешь же ещё этих мягких французских булок", "ПРИВЕТ МИР", "Україна, Київ, їжак",
    "Беларусь і Ўсход", "Српски језик: љубав, њива, ђак", "Македонски: ѓ ќ ѕ",
    # other scripts
    "日本語のテキスト", "東京タワーの夜景", "ラーメンを食べる", "中文字符测试", "北京烤鸭", "한국어 텍스트", "서울의 밤",
    "עברית טקסט", "שלום עולם", "العربية نص", "مرحبا بالعالم", "हिन्दी पाठ", "नमस्ते दुनिया", "ภาษาไทย",
    "Tiếng Việt có dấu", "Xin chào thế giới", "ქართული ენა", "Հայերեն լեզու", "ᐃᓄᒃᑎᑐᑦ", "አማርኛ",
    # symbols and emoji
    "🍕 pizza", "I ❤ NY", "✔ done ✘ failed", "→ ← ↑ ↓", "½ ¼ ¾ ± × ÷", "°C and µm", "x² + y³ = z¹",
    "“smart quotes” and ‘single’", "bullet • list", "en – dash and em — dash", "…and more", "™ ® ©", "№ 5",
    "👩‍💻 coder", "🏳️‍🌈 flag", "👍🏽 thumbs", "🇫🇷 🇯🇵", "😀😃😄", "𝒥𝒶𝓋𝒶 math", "♠♥♦♣", "⚡ lightning",
]

# Examples from ftfy's docstrings and comments written as prose rather than doctests.
DOC_PROSE = [
    "â€œ like this â€\ufffd", "this&not that", "Ã la mode", "fÃ cil", "Ã\xa0 la", "voilÃ  le travail",
    "voilÃ le travail", "P&EACUTE;REZ", "&amp;", "&amp", "\u2026", "\x85", "âœ”", "Ã³", "sÃ³", "schÃ¶n",
    "&ATILDE;&SUP3;",
    "ã\x83\x84", "(╯°□°)╯︵ ┻━┻", "ちゃぶ台返し", "Table flip", "owl\N{SOFT HYPHEN}flavored", "example\x80",
    "\u110b\u1175\u11b8\u1102\u1175\u1103\u1161", "\x1b[34mblue\x1b[m", "here comes a null! \xc0\x80",
]

# ftfy's behaviour at its edges (each is explained where FTFY.swift reproduces it).
QUIRKS = [
    "Ã©À\nnext line",  # utf-8-variants: b"\xc0" before a final b"\n" decodes as U+0000 and swallows the "\n"
    "Ã©À\n", "í\xa0\x80í°\n", "x í\xa0\x80í°\n",  # CESU-8 with `$` standing in for its last byte
    "&#59;", "&#x3b;", "&#X3B;", "&#38;", "&#x26;amp;", "&amp;amp;", "&amp;lt;b&amp;gt;", "&lt;b&gt;bold&lt;/b&gt;",
    "a < b &amp; c", "&amp; line one\n<b> line two &amp;\nline three &amp;", "line one &amp;\nline two <\n&amp;",
    "<\n&amp;", "&amp;\n<", "&#0;", "&#13;", "&#128;", "&#x80;", "&#x81;", "&#x9F;", "&#150;", "&#1;", "&#x7f;",
    "&#xFDD0;", "&#xFFFE;", "&#x10FFFF;", "&#x110000;", "&#1114112;", "&#xD800;", "&#xD83D;&#xDE00;",
    "&#99999999999999999999999;", "&#xFFFFFFFFFFFFFFFFFFFFFF;", "&#65", "&#65;", "&#0065;", "&#x41;", "&#X41;",
    "&#x;", "&#;", "&#12ab;", "&#x41g;", "&#a;", "&; &a; &AMP; &Amp; &QUOT; &LT; &GT;", "&EACUTE; &Eacute; &eacute;",
    "&NTILDE; &nTILDE;", "&SZLIG; &szlig;", "&THORN; &ETH; &AELIG;", "&HilbertSpace; &Jscr; &checkmark;",
    "&CounterClockwiseContourIntegral;", "&NotNestedGreaterGreater; &bne; &nvlt; &fjlig;", "&abcdefghijklmnopqrstuvwx;",
    "&abcdefghijklmnopqrstuvwxy;", "&nbsp;&nbsp;&nbsp;", "&zwj; &zwnj; &lrm; &rlm;", "&Tab;&NewLine;x",
    "\x80", "\x81", "\x85", "\x9d", "\x80\x81\x82", "abc\x93quoted\x94 text", "caf\xe9\x85", "caf\xe9\x81",
    "✓ \x93quoted\x94", "\x1b[31mred\x1b[0m", "\x1b[1;32;40mbold green\x1b[m", "\x1b[٣m arabic digit",
    "\x1b[31 incomplete", "\x1b]0;title\x07", "\x1b(B", "\x1b[?25h", "tab\there", "\x00nul\x01soh\x7fdel",
    "\ufeffBOM", "a\u206ab\u206fc", "\ufff9\ufffa\ufffb\ufffc", "\u200b\u200c\u200d\u200e\u200f", "\u202a\u202e",
    "\U000e0067\U000e0062", "\U0001d173\U0001d17a", "line\r\nbreak", "cr\ronly", "ls\u2028ps\u2029nel\x85end",
    "\r\r\n", "\n\n\n", "trailing\n", "Ã\n©", "Ã©\r\nÃ¨", "ÃƒÂ©", "Ãƒâ€šÃ‚Â", "Ã¢â‚¬Å“", "â€™", "â€\x9d",
    "â€", "Ã", "Â", "Â ", " Ã ", "Ã ", "a Ã b", "fÃ cil", "Ã quele", "Ã quela coisa", "Ã s vezes", "Ã  la",
    "NOËL", "ÃŽ", "Ã‰", "Ã‰T", "ÂŽ", "Â£", "Â°C", "12Â°C", "Â½", "×²", "Ø§Ù„Ø¹Ø±Ø¨ÙŠØ©", "à²", "â€¦", "√±", "≈°",
    "‚Äú", "‚Äù", "вЂ™", "вЂњtestвЂќ", "ГўВЂВќ test", "β€™", "ā€™", "ΓΕ", "Ã\xadndice", "Ã¡rbol", "ÂÃ",
    "Œuvre", "œa", "ÅŸ", "Ä±", "Ã¼", "ï»¿BOM", "ï¿½", "Ã¯Â¿Â½", "\ufffd", "�?", "Ã?", "â€?", "â€? test",
    "ð\x9f\x98\x80", "ðŸ˜€", "ðŸ’©", "ð", "ðŸ", "í\xa0½í¸\x8d", "í\x95\x9c국", "íŒŒ", "À\x80", "a À\x80 b",
    "Ã€Â€", "¯\\_(ツ)_/¯", "Ò_Ó", "(ÒwÓ)", "ಠ_ಠ", "╯°□°）╯", "┻━┻", "│ ├ ┤", "░▒▓█", "™ƒ",
    "ΟΔΟΣ", "ΣΑΣ", "Σ", "ΑΣ.", "ΑΣ'Σ", "ΑΣ\u0301", "Α\u0301Σ", "ΌΣΟΣ ΧΡΟΝΟΣ",
    "İ", "ẞ", "ǅ ǈ ǋ ǲ", "Ĳssel", "ŉ", "ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ", "ﬓ ﬔ ﭏ", "Ａ１！～", "ｶﾀｶﾅ", "ﾡﾢﾣ", "￠￡￢￣￤￥￦", "￨￩￪￫￬￭￮",
    "\u3000full\u3000space", "‘’‚‛“”„‟ʼ", "«»‹›", "e\u0301", "e\u0301\u0301", "\u212b\u2126", "\u1e9b\u0323",
    "\u1100\u1161\u11a8", "\u0915\u093c", "\u0344", "ḱ\u0304", "\u0958",
    # the tokenizer's pattern under the regex module's IGNORECASE, after cleaning
    "it'ſ a test", "IT'S", "aç\u0345e", "x \u0345 y", "\u0345", "!\u0345!", "α\u0345", "<|ſtartoftext|>",
    "&lt;|endoftext|&gt;", "a&lt;|startoftext|&gt;b",
]


def doc_examples() -> list[str]:
    """Every string in the doctests of ftfy's docstrings, inputs and printed outputs."""
    out: list[str] = []
    finder = doctest.DocTestFinder()
    modules = ["ftfy", "ftfy.fixes", "ftfy.chardata", "ftfy.badness", "ftfy.bad_codecs", "ftfy.bad_codecs.sloppy",
               "ftfy.bad_codecs.utf8_variants", "ftfy.formatting"]
    for name in modules:
        for test in sorted(finder.find(importlib.import_module(name)), key=lambda t: t.name):
            for example in test.examples:
                for node in ast.walk(ast.parse(example.source)):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str):
                        out.append(node.value)
                    elif isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                        out.append(node.value.decode("latin-1"))
                        out.append(node.value.decode("windows-1252", errors="replace"))
                want = example.want.rstrip("\n")
                if want:
                    try:
                        value = ast.literal_eval(want)
                        out.append(value if isinstance(value, str) else want)
                    except (ValueError, SyntaxError):
                        out.append(want)
    return out


def upstream_test_cases() -> list[str]:
    """ftfy's own test cases (tests/test_cases.json of the pinned release's source distribution, fetched from PyPI with
    pip into a temporary folder): every case's original text and what ftfy's tests expect it fixed to."""
    import subprocess
    import tarfile
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", f"ftfy=={ftfy.__version__}", "--no-binary", ":all:",
                        "--no-deps", "--quiet", "--dest", folder], check=True)
        archive = next(Path(folder).glob("ftfy-*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/tests/test_cases.json"))
            cases = json.load(tar.extractfile(member))
    return [text for case in cases for text in (case["original"], case["fixed"])]


def mojibake(text: str, encoding: str, how: str = "replace") -> str:
    """UTF-8 bytes of `text` decoded as `encoding`: undefined bytes as U+FFFD, '?', or sloppily (as Latin-1)."""
    data = text.encode("utf-8")
    if how == "sloppy":
        return "".join(bytes([b]).decode(encoding, errors="replace").replace("\ufffd", chr(b)) for b in data)
    decoded = data.decode(encoding, errors="replace")
    return decoded.replace("\ufffd", "?") if how == "question" else decoded


def cesu8(text: str) -> bytes:
    """CESU-8: characters past U+FFFF as two UTF-8-encoded surrogates."""
    out = b""
    for ch in text:
        if ord(ch) > 0xFFFF:
            u = ord(ch) - 0x10000
            for s in (0xD800 + (u >> 10), 0xDC00 + (u & 0x3FF)):
                out += chr(s).encode("utf-8", errors="surrogatepass")
        else:
            out += ch.encode("utf-8")
    return out


def mojibake_prompts(rng: random.Random) -> list[str]:
    out = []
    for phrase in PHRASES:
        for enc in MOJIBAKE_ENCODINGS:
            out.append(mojibake(phrase, enc))
        out.append(mojibake(phrase, "windows-1252", "sloppy"))
        out.append(mojibake(phrase, rng.choice(["windows-1252", "windows-1251", "windows-1253"]), "question"))
        # twice over
        once = mojibake(phrase, "windows-1252", "sloppy")
        out.append(mojibake(once, rng.choice(["latin-1", "windows-1252"]), "sloppy"))
        # one word mojibaked, the rest intact
        words = phrase.split(" ")
        k = rng.randrange(len(words))
        words[k] = mojibake(words[k], rng.choice(MOJIBAKE_ENCODINGS[:4]), "sloppy")
        out.append(" ".join(words))
        # U+00A0 turned into a space by some other program
        out.append(mojibake(phrase, "windows-1252", "sloppy").replace("\xa0", " "))
    # one line of several mojibaked: ftfy fixes each line on its own
    for _ in range(60):
        lines = rng.sample(PHRASES, 3)
        k = rng.randrange(3)
        lines[k] = mojibake(lines[k], rng.choice(MOJIBAKE_ENCODINGS), rng.choice(["replace", "sloppy"]))
        out.append(rng.choice(["\n", "\r\n", "\u2028", " "]).join(lines))
    # mojibake in the middle of clean text in another script (decode_inconsistent_utf8)
    for _ in range(60):
        a, b, c = rng.sample(PHRASES, 3)
        out.append(f"{a} {mojibake(b, rng.choice(['windows-1252', 'latin-1']), 'sloppy')} {c}")
    # upper case mojibake, mojibake of upper case
    for phrase in rng.sample(PHRASES, 30):
        out.append(mojibake(phrase, "windows-1252", "sloppy").upper())
        out.append(mojibake(phrase.upper(), rng.choice(MOJIBAKE_ENCODINGS)))
    # CESU-8 (and Java's NUL) read as single bytes
    for text in ["😍 love", "emoji 😀 here", "💩", "𝒥ohn", "a🍕b🐱c", "no astral é", "🇫🇷", "x\x00y"]:
        data = cesu8(text).replace(b"\x00", b"\xc0\x80")
        for enc in ("latin-1", "windows-1252", "windows-1251"):
            out.append(data.decode(enc, errors="replace"))
    return out


def html_prompts(rng: random.Random) -> list[str]:
    import html.entities

    names = sorted(html.entities.html5)
    out = []
    for name in rng.sample(names, 120):
        body = name if name.endswith(";") else name + rng.choice([";", "", " "])
        out.append(f"x &{body} y")
    for name in rng.sample([n for n in names if n.endswith(";") and n == n.lower()], 40):
        out.append(f"&{name.upper()} &{name}")
    for _ in range(60):
        cp = rng.choice([rng.randrange(0, 0x100), rng.randrange(0x100, 0x3000), rng.randrange(0x1F300, 0x1FAFF),
                         rng.randrange(0xD700, 0xE100), rng.randrange(0xFFF0, 0x10000)])
        form = rng.choice(["&#%d;", "&#x%x;", "&#X%X;", "&#%d", "&#x%04X;", "&#0%d;"])
        out.append(f"a{form % cp}b")
    for _ in range(40):
        parts = [rng.choice(["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&eacute;", "&hellip;", "&mdash;", "&copy;",
                             "&nbsp;", "&rarr;", "&hearts;", "text", "<b>", "</i>", "<", ">", "\n", " ", "&"])
                 for _ in range(rng.randint(2, 7))]
        out.append("".join(parts))
    return out


def control_prompts(rng: random.Random) -> list[str]:
    controls = [chr(c) for c in range(0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)] + [
        "\ufeff", "\u206a", "\u206f", "\ufff9", "\ufffc", "\u2028", "\u2029", "\x1b[0m", "\x1b[38;5;208m", "\r\n"]
    out = []
    for _ in range(80):
        base = rng.choice(PHRASES + ["plain ascii text", "a photo of a cat"])
        chars = list(base)
        for _ in range(rng.randint(1, 3)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(controls))
        out.append("".join(chars))
    return out


def form_prompts(rng: random.Random) -> list[str]:
    out = []
    for phrase in PHRASES:
        nfd = unicodedata.normalize("NFD", phrase)
        if nfd != phrase:
            out.append(nfd)
    width = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
    for phrase in ["LOUD NOISES", "a photo of a cat", "Hello, World! 123", "ｱｲｳｴｵ ﾊﾟﾋﾟ", "ﾍﾞｰｽ"]:
        out.append("".join(width.get(ch, "\u3000" if ch == " " else ch) for ch in phrase))
    for _ in range(30):
        n = rng.randint(3, 12)
        out.append("".join(chr(rng.choice([rng.randrange(0xFF01, 0xFFEF), rng.randrange(0x3000, 0x3100),
                                           rng.randrange(0xFB00, 0xFB07), 0x132, 0x133, 0x149, 0x1C4, 0x1C5, 0x1F3,
                                           rng.randrange(0x2018, 0x2020), 0x2BC, 0x20]))
                           for _ in range(n)))
    return out


def random_unicode(rng: random.Random) -> list[str]:
    """Short strings drawn from the blocks mojibake is made of, and from everywhere."""
    pools = [
        list(range(0x20, 0x7F)), list(range(0xA0, 0x180)), list(range(0x80, 0xA0)), list(range(0x370, 0x460)),
        list(range(0x2010, 0x2040)) + [0x20AC, 0x2122, 0x2116, 0x192, 0x2C6, 0x2DC, 0x2030, 0x2039, 0x203A],
        list(range(0x2500, 0x25A0)), [0x221A, 0x2248, 0x2260, 0x2264, 0x2265, 0x221E, 0x2202, 0x2206, 0xF8FF, 0x25CA],
        list(range(0x3040, 0x30FF)), list(range(0xAC00, 0xAC80)), list(range(0x1F600, 0x1F650)),
        list(range(0x300, 0x370)),
    ]
    out = []
    for _ in range(70):
        pool = rng.choice(pools[1:]) + pools[0]
        n = rng.randint(1, 14)
        out.append("".join(chr(rng.choice(pool)) for _ in range(n)))
    return out


def mixtures(rng: random.Random, fragments: list[str]) -> list[str]:
    out = []
    for _ in range(80):
        parts = rng.sample(fragments, rng.randint(2, 4))
        out.append(rng.choice([" ", "\n", "\r\n", "", ", ", " | "]).join(parts))
    return out


def prompts() -> list[str]:
    rng = random.Random(SEED)
    docs = doc_examples() + upstream_test_cases()
    moj = mojibake_prompts(rng)
    htm = html_prompts(rng)
    ctl = control_prompts(rng)
    frm = form_prompts(rng)
    uni = random_unicode(rng)
    pool = DOC_PROSE + QUIRKS + moj + htm + ctl + frm + uni
    mix = mixtures(rng, [p for p in pool if len(p) < 60])
    seen: set[str] = set()
    out = []
    for p in docs + DOC_PROSE + QUIRKS + PHRASES + moj + htm + ctl + frm + uni + mix:
        if p not in seen and not any(0xD800 <= ord(c) <= 0xDFFF for c in p):
            seen.add(p)
            out.append(p)
    return out


def update_manifest(doc: dict) -> None:
    path = REPO / "Fixtures" / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    name = str(OUT.relative_to(REPO / "Fixtures"))
    entry = {"file": name, "size": OUT.stat().st_size, "sha256": hashlib.sha256(OUT.read_bytes()).hexdigest()}
    # In Tools/make_fixtures.py's order (sorted paths, compared part by part).
    manifest["files"] = sorted([e for e in manifest["files"] if e["file"] != name] + [entry],
                               key=lambda e: Path(e["file"]).parts)
    manifest.setdefault("also", {})[name] = {
        "generator": COMMAND, "versions": {k: doc[k] for k in ("ftfy", "transformers", "regex", "python")}}
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"updated {path.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update-manifest", action="store_true",
                        help="also write this file's entry in Fixtures/MANIFEST.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tok = clip_tokenizer(Path(scratch))
    assert tok.fix_text is ftfy.fix_text, "the tokenizer must clean with ftfy"
    cases = []
    changed = 0
    for p in prompts():
        fixed = ftfy.fix_text(p)
        changed += fixed != p
        ids = tok(p, padding="max_length", truncation=True, max_length=77).input_ids
        assert len(ids) == 77, (p, len(ids))
        while ids and ids[-1] == PAD:
            ids.pop()
        # "fixed" only where ftfy changes the text (a quarter of the prompts it leaves alone): the file stays small.
        cases.append({"prompt": p, "fixed": fixed, "ids": ids} if fixed != p else {"prompt": p, "ids": ids})
    doc = {
        "generator": COMMAND,
        "seed": SEED,
        "ftfy": ftfy.__version__,
        "transformers": transformers.__version__,
        "regex": regex.__version__,
        "python": sys.version.split()[0],
        "unicodedata": unicodedata.unidata_version,
        "tokenizer": "CLIPTokenizer (slow, ftfy installed), padding='max_length', truncation=True, max_length=77",
        "ids": "input_ids without the trailing run of 49407 (<|endoftext|>, also the pad token); pad to 77 with 49407",
        "fixed": "ftfy.fix_text(prompt), given only where it differs from the prompt",
        "cases": cases,
    }
    text = dump_lines(doc, ensure_ascii=False)
    assert json.loads(text) == doc
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}: {len(cases)} prompts ({changed} changed by ftfy), "
          f"{OUT.stat().st_size} bytes")
    if args.update_manifest:
        update_manifest(doc)


if __name__ == "__main__":
    main()
