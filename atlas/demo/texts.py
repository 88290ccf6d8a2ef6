"""Readers of the demo's texts as Debian ships them, in plain Python (no R, no SWORD library): WordNet glosses, Jane
Austen's novels, the World English Bible, and Python's own docstrings as the fallback."""

from __future__ import annotations

import ast
import html
import re
import struct
import sysconfig
import zlib
from pathlib import Path

WORDNET_FILES = ("data.adj", "data.adv", "data.noun", "data.verb")
# Inside the unpacked packages: where each text lives.
WORDNET_DIR = Path("usr/share/wordnet")
AUSTEN_RDB = Path("usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
BIBLE_DIR = Path("usr/share/sword/modules/texts/ztext/engWEB2015eb")
# Bible verses are joined into passages of about this many characters (~100 tokens), so a context reads as prose.
PASSAGE_CHARS = 450


def wordnet_glosses(root: Path) -> list[str]:
    """One text per synset: its words, then its gloss (definition and usage examples)."""
    texts = []
    for name in WORDNET_FILES:
        with (root / WORDNET_DIR / name).open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, gloss = line.split("|", 1)
                fields = head.split()
                n_words = int(fields[3], 16)
                words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
                words = [w.split("(")[0] for w in words]  # adjective markers like (a)
                texts.append(f"{', '.join(words)}: {gloss.strip()}")
    return texts


def austen_paragraphs(root: Path) -> list[str]:
    """The paragraphs of Austen's six novels from janeaustenr's lazy-load database.

    The file is a run of objects, each a 4-byte length and a zlib stream of R's XDR serialisation; each novel is a
    character vector with one element per printed line, blank lines between paragraphs.
    """
    data = (root / AUSTEN_RDB).read_bytes()
    paragraphs, pos = [], 0
    while pos < len(data):
        stream = zlib.decompressobj()
        buf = stream.decompress(data[pos + 4:])
        pos = len(data) - len(stream.unused_data)
        lines = _r_character_vector(buf)
        if lines is None:
            continue  # another kind of object (the data sets' other columns)
        current: list[str] = []
        for line in [*lines, ""]:
            if line.strip():
                current.append(line.strip())
            elif current:
                text = re.sub(r"_(\w[^_]*)_", r"\1", " ".join(current))  # _emphasis_ marks italics
                current = []
                if len(text) > 40:  # chapter headings and titles are shorter
                    paragraphs.append(text)
    return paragraphs


def _r_character_vector(buf: bytes) -> list[str] | None:
    """The strings of an XDR-serialised R character vector (NA as ""), or None for any other object."""
    if buf[:2] != b"X\n":
        raise ValueError("not an XDR-serialised R object")
    pos = 14  # format, version, writer's R version, oldest reader's R version
    if struct.unpack_from(">i", buf, 2)[0] == 3:
        pos += 4 + struct.unpack_from(">i", buf, pos)[0]  # the native encoding's name
    flags, n = struct.unpack_from(">ii", buf, pos)
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        return None
    strings = []
    for _ in range(n):
        flags, length = struct.unpack_from(">ii", buf, pos)
        pos += 8
        if length < 0:
            strings.append("")
            continue
        utf8 = flags & (1 << 15)  # the CHARSXP's UTF8 level bit (gp bit 3, stored from bit 12)
        strings.append(buf[pos:pos + length].decode("utf-8" if utf8 else "latin-1"))
        pos += length
    return strings


def bible_passages(root: Path) -> list[str]:
    """The World English Bible in passages of consecutive verses, from the SWORD module's compressed text.

    *.bzs lists (offset, size, uncompressed size) of zlib blocks in *.bzz; *.bzv gives each verse's (block, offset,
    size) inside its uncompressed block. Footnotes stand where a space was, so each becomes one space.
    """
    verses = []
    for testament in ("ot", "nt"):
        base = root / BIBLE_DIR
        bzs, bzz, bzv = ((base / f"{testament}.{ext}").read_bytes() for ext in ("bzs", "bzz", "bzv"))
        blocks = [zlib.decompress(bzz[off:off + size]) for off, size, _ in struct.iter_unpack("<III", bzs)]
        for block, off, size in struct.iter_unpack("<IIH", bzv):
            if not size or block >= len(blocks):
                continue
            osis = blocks[block][off:off + size].decode("utf-8", errors="replace")
            osis = re.sub(r"<note\b.*?</note>", " ", osis, flags=re.S)
            text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", osis)).split())
            text = re.sub(r" ([,.;:!?’”])", r"\1", text)
            if text:
                verses.append(text)
    passages, current = [], ""
    for verse in verses:
        current = f"{current} {verse}" if current else verse
        if len(current) >= PASSAGE_CHARS:
            passages.append(current)
            current = ""
    if current:
        passages.append(current)
    return passages


def stdlib_docstrings() -> list[str]:
    """Paragraphs of the docstrings in Python's standard library sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    for para in doc.split("\n\n"):
                        para = " ".join(para.split())
                        if len(para) > 40:
                            texts.append(para)
    return texts
