"""The demo corpus: readers of the packaged texts (on small files written in their formats), the mix of sources, and
going on without a source that cannot be had."""

import json
import struct
import zlib
from pathlib import Path

import pytest

from atlas.demo import corpus as demo_corpus
from atlas.demo.texts import AUSTEN_RDB, BIBLE_DIR, WORDNET_DIR, austen_paragraphs, bible_passages, wordnet_glosses


def _r_strings(lines: list[str | None]) -> bytes:
    """An R character vector serialised as R's XDR format 3 writes it (NA for None)."""
    out = b"X\n" + struct.pack(">iii", 3, 0x040300, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(lines))
    for line in lines:
        if line is None:
            out += struct.pack(">ii", 9, -1)
        else:
            raw = line.encode()
            out += struct.pack(">ii", 9 | (1 << 15), len(raw)) + raw
    return out


def _lazy_load_db(objects: list[bytes]) -> bytes:
    return b"".join(struct.pack(">i", len(o)) + zlib.compress(o) for o in objects)


def test_austen_paragraphs_from_the_r_database(tmp_path):
    novel = ["EMMA", "", "CHAPTER I", "", "Emma Woodhouse, handsome, clever, and rich, with a", "comfortable home",
             "and _happy_ disposition.", "", None, "She was the youngest of the two daughters of a most",
             "affectionate, indulgent father.", ""]
    other = b"X\n" + struct.pack(">iii", 2, 0, 0) + struct.pack(">ii", 13, 0)  # an integer vector: skipped
    path = tmp_path / AUSTEN_RDB
    path.parent.mkdir(parents=True)
    path.write_bytes(_lazy_load_db([_r_strings(novel), other, _r_strings(["Persuasion's first paragraph, long "
                                                                          "enough to count as one."])]))
    assert austen_paragraphs(tmp_path) == [
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.",
        "She was the youngest of the two daughters of a most affectionate, indulgent father.",
        "Persuasion's first paragraph, long enough to count as one.",
    ]


def _sword_module(folder: Path, verses: list[str], per_block: int = 2) -> None:
    """A SWORD zText module's files for the Old Testament (the New one empty)."""
    folder.mkdir(parents=True)
    bzs, bzz, bzv = b"", b"", b""
    for b, start in enumerate(range(0, len(verses), per_block)):
        block = b""
        for v in verses[start:start + per_block]:
            raw = v.encode()
            bzv += struct.pack("<IIH", b, len(block), len(raw))
            block += raw
        packed = zlib.compress(block)
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    bzv += struct.pack("<IIH", 0, 0, 0)  # an empty entry (a chapter heading's slot)
    for name, data in (("ot.bzs", bzs), ("ot.bzz", bzz), ("ot.bzv", bzv), ("nt.bzs", b""), ("nt.bzz", b""),
                       ("nt.bzv", b"")):
        (folder / name).write_bytes(data)


def test_bible_passages_drop_footnotes_and_join_verses(tmp_path, monkeypatch):
    monkeypatch.setattr("atlas.demo.texts.PASSAGE_CHARS", 50)
    verses = ['<verse osisID="Gen.1.1"/>In the beginning, God<note type="x">Or, gods</note>created the heavens '
              "and the earth.", "The earth was formless &amp; empty .", "God said, “Let there be light,”",
              "and there was light."]
    _sword_module(tmp_path / BIBLE_DIR, verses)
    assert bible_passages(tmp_path) == [
        "In the beginning, God created the heavens and the earth.",  # a footnote stands where a space was
        "The earth was formless & empty. God said, “Let there be light,”",
        "and there was light.",
    ]


def test_wordnet_glosses(tmp_path):
    folder = tmp_path / WORDNET_DIR
    folder.mkdir(parents=True)
    for name in ("data.adj", "data.adv", "data.noun", "data.verb"):
        (folder / name).write_text("  1 This software and database is being provided\n")
    (folder / "data.noun").write_text("  1 licence\n00001740 03 n 02 entity 0 thing 1 000 | that which is perceived\n",
                                      encoding="utf-8")
    (folder / "data.adj").write_text("00001740 00 a 01 able(a) 0 000 | having the necessary means\n")
    assert wordnet_glosses(tmp_path) == ["able: having the necessary means", "entity, thing: that which is perceived"]


def test_interleave_keeps_every_prefix_mixed():
    a = [f"a{i} " * 5 for i in range(100)]  # long documents
    b = [f"b{i}" for i in range(300)]  # short ones
    mixed = demo_corpus.interleave([a, b])
    assert sorted(mixed) == sorted(a + b)
    for cut in (20, 60, 120):
        chars_a = sum(len(t) for t in mixed[:cut] if t.startswith("a"))
        chars_b = sum(len(t) for t in mixed[:cut] if t.startswith("b"))
        assert abs(chars_a - chars_b) <= max(len(a[0]), len(b[0]))


@pytest.fixture
def fake_packages(monkeypatch):
    """Sources read from fixed texts; `missing` lists packages that cannot be had."""
    missing: set[str] = set()

    def unpacked(self, package):
        return None if package in missing else Path("/unused") / package

    monkeypatch.setattr(demo_corpus.DebianPackages, "unpacked", unpacked)
    texts = {"wordnet": [f"gloss {i}" for i in range(50)], "austen": [f"Austen paragraph {i}" for i in range(30)],
             "bible": [f"verse {i}" for i in range(40)]}
    for name, src in list(demo_corpus.SOURCES.items()):
        monkeypatch.setitem(demo_corpus.SOURCES, name, demo_corpus.Source(src.package, lambda root, t=texts[name]: t,
                                                                          src.title, src.unit))
    monkeypatch.setattr(demo_corpus, "stdlib_docstrings", lambda: ["a docstring paragraph"])
    return missing


def _read(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_a_missing_source_is_left_out_and_said(tmp_path, fake_packages):
    fake_packages.add("r-cran-janeaustenr")
    lines = []
    path, note = demo_corpus.build_demo_corpus(tmp_path, 0, ["wordnet", "austen", "bible"], lines.append)
    texts = _read(path)
    assert len(texts) == 90 and not any(t.startswith("Austen") for t in texts)
    assert any("Austen" in line and "r-cran-janeaustenr" in line and "going on" in line for line in lines)
    assert "WordNet" in note and "Bible" in note and "Austen" not in note


def test_no_source_falls_back_to_docstrings(tmp_path, fake_packages):
    fake_packages.update({"wordnet-base", "sword-text-web"})
    lines = []
    path, note = demo_corpus.build_demo_corpus(tmp_path, 0, ["wordnet", "bible"], lines.append)
    assert _read(path) == ["a docstring paragraph"] and "docstrings" in note
    assert any("docstrings instead" in line for line in lines)


def test_sources_match_the_config_choices():
    from atlas.config import CHOICES

    assert tuple(demo_corpus.SOURCES) == CHOICES[("demo", "sources")]
