"""Tests of the debtags builder's parsing and selection logic (no apt, no network)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from benchmarks import build_debtags as debtags
from benchmarks.build_debtags import (
    Package,
    _write_jsonl,
    describe_lists,
    draw_sample,
    join_packages,
    kept_labels,
    parse_release,
    parse_source,
    parse_stanzas,
    parse_tag_field,
    parse_vocabulary,
    select_documents,
    split_description,
    split_of,
)

PACKAGES = """\
Package: foo
Version: 1.0-1
Description: Foo editor for text
Description-md5: aaa
Tag: use::editing, works-with::text, role::program,
 implemented-in::c

Package: foo-common
Source: foo
Version: 1.0-1
Description: Foo editor for text (common files)
Description-md5: bbb
Tag: use::editing, works-with::text, role::app-data

Package: foo-data
Source: foo (1.0-1)
Description: Foo editor for text (data files)
Description-md5: ccc
Tag: use::editing, works-with::text, use::TODO

Package: libbar-dev
Source: bar
Description: Bar library (development files)
Description-md5: ddd
Tag: devel::library, works-with::image, use::viewing

Package: bar-tools
Source: bar
Description: Bar image viewing tools
Description-md5: eee
Tag: works-with::image, use::viewing

Package: baz
Description: Baz tool
Description-md5: fff
Tag: role::program, devel::lang:c

Package: qux
Description: Qux viewer
Description-md5: ggg
Tag: use::viewing

Package: quux
Description: Qux viewer
Description-md5: hhh
Tag: use::viewing, game::toys

Package: tiny
Description: Tiny thing
Description-md5: iii
Tag: use::playing
"""

TRANSLATION = """\
Package: foo
Description-md5: aaa
Description-en: Foo editor for text
 Foo is a small editor
 for plain text files.
 .
 Features:
  * undo
  * syntax highlighting

Package: foo-common
Description-md5: bbb
Description-en: Foo editor for text (common files)
 Shared files of the Foo editor.

Package: libbar-dev
Description-md5: ddd
Description-en: Bar library (development files)
 Headers of the Bar image library.

Package: bar-tools
Description-md5: eee
Description-en: Bar image viewing tools
 Command line tools to view images.

Package: qux
Description-md5: ggg
Description-en: Qux viewer
 Views qux files in a window.

Package: quux
Description-md5: hhh
Description-en: Qux viewer
 Views qux files in a window.

Package: tiny
Description-md5: WRONG
Description-en: Tiny thing
 This long description must not be joined.
"""

VOCABULARY = """\
Facet: use
Description: Purpose
 The general purpose of the software

Tag: use::editing
Description: Editing
 Editing things.

Tag: use::viewing
Description: Viewing

Tag: use::TODO
Description: Need an extra tag

Facet: works-with
Description: Works with
 What kind of data the package works with

Tag: works-with::text
Description: Text

Tag: works-with::image
Description: Image

Facet: role
Description: Role

Tag: role::program
Description: Program

Facet: game
Description: Games and Amusement

Tag: game::toys
Description: Toy or Gimmick
"""


def _packages() -> list[Package]:
    packages, counts = join_packages(parse_stanzas(PACKAGES), parse_stanzas(TRANSLATION))
    assert counts == {"packages_read": 9, "with_translation": 6}
    return packages


def _kept() -> set[str]:
    facets, tags = parse_vocabulary(VOCABULARY)
    return {label.id for label in kept_labels(facets, tags)}


def test_parse_stanzas_continuations() -> None:
    stanzas = parse_stanzas(PACKAGES)
    assert len(stanzas) == 9
    assert stanzas[0]["Tag"].endswith("\nimplemented-in::c")
    assert parse_tag_field(stanzas[0]["Tag"]) == (
        "use::editing",
        "works-with::text",
        "role::program",
        "implemented-in::c",
    )
    foo = parse_stanzas(TRANSLATION)[0]["Description-en"]
    assert foo.split("\n")[3] == "."


def test_split_description_paragraphs() -> None:
    value = parse_stanzas(TRANSLATION)[0]["Description-en"]
    short, long = split_description(value)
    assert short == "Foo editor for text"
    assert long == ("Foo is a small editor for plain text files.\n\nFeatures:\n* undo\n* syntax highlighting")
    assert split_description("Just short") == ("Just short", "")


def test_parse_source() -> None:
    assert parse_source(None, "foo") == "foo"
    assert parse_source("foo (1.0-1)", "foo-data") == "foo"
    assert parse_source("bar", "libbar-dev") == "bar"


def test_join_uses_md5_and_falls_back_to_short_description() -> None:
    by_name = {p.name: p for p in _packages()}
    assert by_name["foo"].text.startswith("Foo editor for text\nFoo is a small")
    assert by_name["foo-data"].source == "foo"
    assert by_name["tiny"].text == "Tiny thing"  # md5 mismatch: no long description
    assert by_name["baz"].text == "Baz tool"  # no translation at all


def test_join_first_stanza_wins() -> None:
    other = {"Package": "foo", "Description": "Other", "Tag": "game::toys"}
    stanzas = [*parse_stanzas(PACKAGES), other]
    packages, counts = join_packages(stanzas, [])
    assert counts["packages_read"] == 9
    assert next(p for p in packages if p.name == "foo").text == "Foo editor for text"


def test_vocabulary_facets_and_todo() -> None:
    facets, tags = parse_vocabulary(VOCABULARY)
    assert facets["use"] == ("Purpose", "The general purpose of the software")
    assert tags["use::editing"] == ("Editing", "Editing things.")
    labels = kept_labels(facets, tags)
    assert [label.id for label in labels] == [
        "game::toys",
        "use::editing",
        "use::viewing",
        "works-with::image",
        "works-with::text",
    ]  # no use::TODO, no role::*, sorted by id
    editing = labels[1]
    assert (editing.text, editing.description, editing.facet) == (
        "Editing",
        "Purpose",
        "use",
    )


def test_select_documents() -> None:
    documents, counts = select_documents(_packages(), _kept(), min_words=5)
    assert counts == {
        "packages": 9,
        # baz: only role/devel tags; tiny: use::playing is not in the vocabulary
        "with_kept_tags": 7,
        # foo/foo-common/foo-data -> foo; libbar-dev/bar-tools -> bar-tools
        "after_one_per_source": 4,
        # qux has the same text as quux, which comes first (source order)
        "after_dedup": 3,
        "after_min_words": 3,
    }
    by_name = {d.name: d for d in documents}
    assert sorted(by_name) == ["bar-tools", "foo", "quux"]
    # foo-data has as many kept tags as foo (use::TODO is dropped) but an
    # auxiliary suffix; role::* and implemented-in::* are not topical.
    assert by_name["foo"].tags == ("use::editing", "works-with::text")
    # bar-tools wins over libbar-dev (-dev suffix) with the same kept tags
    assert by_name["bar-tools"].tags == ("use::viewing", "works-with::image")


def test_select_documents_most_tags_then_shortest_name() -> None:
    packages = [
        Package("aaa-long", "s", ("use::viewing",), "one two three four five"),
        Package("bb", "s", ("use::viewing",), "one two three four six"),
        Package("zzz-doc", "s", ("use::viewing", "use::editing"), "a b c d e"),
        Package("x-dev", "t", ("use::viewing",), "six seven eight nine ten"),
        Package("abc-x", "t", ("use::viewing",), "six seven eight nine ten eleven"),
        Package("cc", "u", ("use::viewing",), "cc"),
        Package("ab", "v", ("use::viewing",), "alpha beta gamma delta eps"),
        Package("aa", "v", ("use::viewing",), "alpha beta gamma delta zeta"),
    ]
    documents, counts = select_documents(packages, _kept(), min_words=5)
    # s: most tags beats the -doc penalty; t: no -dev suffix beats shorter name;
    # u: under 5 words; v: same length -> alphabetical
    assert [d.name for d in documents] == ["aa", "abc-x", "zzz-doc"]
    assert counts["after_one_per_source"] == 4
    assert counts["after_min_words"] == 3


def test_split_rule() -> None:
    for source in ["foo", "bar", "linux", "0ad", "python-numpy", "gimp"]:
        bucket = int(hashlib.sha1(source.encode()).hexdigest(), 16) % 10
        assert split_of(source) == ("dev" if bucket < 2 else "test")
    sources = [f"src{i}" for i in range(2000)]
    share = sum(split_of(s) == "dev" for s in sources) / len(sources)
    assert 0.15 < share < 0.25


def test_draw_sample_is_deterministic() -> None:
    docs = [Package(f"p{i:03d}", f"p{i}", ("use::viewing",), "x") for i in range(50)]
    first = draw_sample(docs, 10, seed=0)
    assert first == draw_sample(list(reversed(docs)), 10, seed=0)
    assert [d.name for d in first] == sorted(d.name for d in first)
    assert len(draw_sample(docs, 100)) == 50


def test_split_dev_is_a_seeded_partition() -> None:
    docs = [Package(f"p{i:03d}", f"p{i}", ("use::viewing",), "x") for i in range(50)]
    select, train = debtags.split_dev(docs, select=12)
    assert len(select) == 12 and sorted(select + train, key=lambda d: d.name) == docs
    assert (select, train) == debtags.split_dev(docs, select=12) != debtags.split_dev(docs, select=12, seed=1)
    assert [d.name for d in select] != sorted(d.name for d in select)  # shuffled, not the first 12


def test_release_and_lists_description(tmp_path: Path) -> None:
    release = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
        "Origin: Debian\nSuite: stable\nCodename: bookworm\n"
        "Date: Sat, 10 Jun 2023 08:00:00 UTC\nMD5Sum:\n abc 1 main/x\n"
        "-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n"
    )
    fields = parse_release(release)
    assert fields["Date"] == "Sat, 10 Jun 2023 08:00:00 UTC"
    assert fields["Codename"] == "bookworm"
    base = "deb.debian.org_debian_dists_bookworm"
    upd = "deb.debian.org_debian_dists_bookworm-updates"
    (tmp_path / f"{base}_InRelease").write_text(release)
    (tmp_path / f"{upd}_Release").write_text("Codename: bookworm-updates\n")
    (tmp_path / f"{base}_main_binary-amd64_Packages").write_text(PACKAGES)
    (tmp_path / f"{base}_main_i18n_Translation-en").write_text(TRANSLATION)
    with gzip.open(tmp_path / f"{upd}_main_binary-amd64_Packages.gz", "wt") as f:
        f.write("Package: new\n")
    (tmp_path / f"{base}_contrib_binary-amd64_Packages").write_text("")
    (tmp_path / f"{base}_main_binary-i386_Packages").write_text("")
    entries = describe_lists(tmp_path)
    assert [e["codename"] for e in entries] == ["bookworm", "bookworm-updates"]
    assert entries[0]["date"] == "Sat, 10 Jun 2023 08:00:00 UTC"
    assert entries[0]["mirror"] == "deb.debian.org/debian"
    assert entries[0]["translation_file"].name.endswith("Translation-en")
    assert entries[1]["translation_file"] is None


def test_write_jsonl_gzip_is_reproducible(tmp_path: Path) -> None:
    records = [{"id": "a", "text": "é"}, {"id": "b", "text": "x"}]
    _write_jsonl(tmp_path / "a.jsonl.gz", records)
    _write_jsonl(tmp_path / "b.jsonl.gz", records)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    lines = gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_bare_label_variant_keeps_only_the_tag_name(tmp_path: Path) -> None:
    described = [
        debtags.Label(id="works-with::audio", text="Audio", description="Works with", facet="works-with"),
        debtags.Label(
            id="accessibility::accessible-via:at-spi",
            text="Accessibility through AT-SPI",
            description="Accessibility Support",
            facet="accessibility",
        ),
    ]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(vars(label)) + "\n" for label in described))
    bare = [json.loads(line) for line in debtags.write_bare_labels(tmp_path).read_text().splitlines()]
    assert [(label["id"], label["text"], label["description"]) for label in bare] == [
        ("works-with::audio", "audio", ""),
        ("accessibility::accessible-via:at-spi", "accessible via at spi", ""),
    ]
