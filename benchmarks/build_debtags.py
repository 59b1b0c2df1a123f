"""Build the debtags benchmark: Debian package descriptions tagged with debtags (data/debtags; needs apt-get).

    python benchmarks/build_debtags.py --out data/debtags
    python benchmarks/build_debtags.py --out data/debtags --bare-labels-only   # offline: labels-bare.jsonl only

Documents are the English long descriptions of the binary packages in Debian
``main`` (amd64 package lists), labels are the debtags tags of the topical
facets, described by the debtags vocabulary.  The package lists are fetched
with ``apt-get update`` into a private lists directory, so the system's apt
state is left alone; the vocabulary comes from the ``debtags`` package.

The pure functions (``parse_stanzas``, ``parse_vocabulary``, ``join_packages``,
``select_documents``, ``split_of`` ...) need neither apt nor the network.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import lzma
import random
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEPT_FACETS: tuple[str, ...] = (
    "use",
    "works-with",
    "works-with-format",
    "field",
    "game",
    "admin",
    "protocol",
    "network",
    "hardware",
    "security",
    "sound",
    "mail",
    "web",
    "science",
    "biology",
    "office",
    "accessibility",
    "culture",
    "junior",
)
"""Facets that say what a package is about (not how it is built or packaged)."""

AUX_SUFFIXES: tuple[str, ...] = ("-dev", "-doc", "-dbg", "-common", "-data")
"""Name suffixes of auxiliary binary packages, avoided when picking one per source."""

MIN_WORDS = 5
DEV_BUCKETS = 2  # sha1(source) % 10 < DEV_BUCKETS -> dev
DEV_SELECT = 300  # dev documents for choices made with labels (split_dev); the rest train without labels

PACKAGES_SUFFIX = "_main_binary-amd64_Packages"
TRANSLATION_SUFFIX = "_main_i18n_Translation-en"
_COMPRESSION_EXTS = ("", ".gz", ".xz", ".bz2", ".lz4", ".zst")
_BULLET = re.compile(r"^([*+\-o•]|\d+[.)])\s")
_SOURCE_VERSION = re.compile(r"\s*\(.*\)\s*$")


@dataclass(frozen=True)
class Package:
    """A binary package with its source, debtags and description text."""

    name: str
    source: str
    tags: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Label:
    """A debtags tag with its short description and its facet's description."""

    id: str
    text: str
    description: str
    facet: str


# --------------------------------------------------------------------------- parsing


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Parse RFC822-style (deb822) stanzas separated by blank lines.

    A field value is its first line, then each continuation line (one that
    starts with a space or tab) with that single leading character removed,
    joined with newlines; a `` .`` line is therefore kept as ``"."``.
    """
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                current[key] += "\n" + line[1:]
        elif line.startswith("#"):
            continue
        else:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_release(text: str) -> dict[str, str]:
    """Parse a Release or (PGP clear-signed) InRelease file into its fields."""
    lines = text.splitlines()
    if lines and lines[0].startswith("-----BEGIN PGP SIGNED MESSAGE"):
        start = lines.index("") + 1 if "" in lines else 1
        end = next(
            (i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP SIGNATURE")),
            len(lines),
        )
        lines = lines[start:end]
    stanzas = parse_stanzas("\n".join(lines))
    return stanzas[0] if stanzas else {}


def split_description(value: str) -> tuple[str, str]:
    """Split a description field into (short, long) text.

    Lines of a paragraph are unwrapped into one line, except verbatim lines
    (indented further) and list items, which keep a line of their own;
    ``.`` lines separate paragraphs, which are joined by blank lines.
    """
    first, _, rest = value.partition("\n")
    paragraphs: list[list[str]] = [[]]
    wrap = False  # whether the next plain line continues the previous one
    for raw in rest.split("\n") if rest else []:
        stripped = raw.strip()
        if stripped == ".":
            paragraphs.append([])
            wrap = False
            continue
        if not stripped:
            continue
        current = paragraphs[-1]
        verbatim = raw.startswith((" ", "\t"))
        if verbatim or _BULLET.match(stripped) or not wrap or not current:
            current.append(stripped)
        else:
            current[-1] += " " + stripped
        wrap = not verbatim
    long = "\n\n".join("\n".join(p) for p in paragraphs if p)
    return first.strip(), long


def parse_tag_field(value: str) -> tuple[str, ...]:
    """Split a ``Tag:`` field value into tag ids."""
    return tuple(t.strip() for t in value.replace("\n", " ").split(",") if t.strip())


def parse_source(value: str | None, package: str) -> str:
    """Return the source package name, defaulting to the binary package name."""
    if not value:
        return package
    return _SOURCE_VERSION.sub("", value).strip() or package


def parse_vocabulary(
    text: str,
) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    """Parse a debtags vocabulary into ``(facets, tags)``: id -> (short, long)."""
    facets: dict[str, tuple[str, str]] = {}
    tags: dict[str, tuple[str, str]] = {}
    for stanza in parse_stanzas(text):
        short, long = split_description(stanza.get("Description", ""))
        if "Facet" in stanza:
            facets[stanza["Facet"]] = (short, long)
        elif "Tag" in stanza:
            tags[stanza["Tag"]] = (short, long)
    return facets, tags


def facet_of(tag: str) -> str:
    """Return the facet of a ``facet::tag`` id."""
    return tag.split("::", 1)[0]


def kept_labels(facets: Mapping[str, tuple[str, str]], tags: Mapping[str, tuple[str, str]]) -> list[Label]:
    """Labels of the vocabulary in the kept facets, without ``::TODO`` tags, by id."""
    labels = []
    for tag, (short, _long) in tags.items():
        facet = facet_of(tag)
        if facet not in KEPT_FACETS or tag.endswith("::TODO"):
            continue
        facet_short = facets.get(facet, ("", ""))[0]
        labels.append(Label(id=tag, text=short, description=facet_short, facet=facet))
    return sorted(labels, key=lambda label: label.id)


# --------------------------------------------------------------------------- joining


def join_packages(
    packages: Iterable[Mapping[str, str]], translations: Iterable[Mapping[str, str]]
) -> tuple[list[Package], dict[str, int]]:
    """Join Packages stanzas with Translation-en stanzas on (Package, Description-md5).

    The first stanza of a package name wins.  Without a translation the text is
    the short ``Description`` of the Packages stanza.  Returns the packages and
    counts (``packages_read``, ``with_translation``).
    """
    long_descriptions: dict[tuple[str, str], str] = {}
    for stanza in translations:
        key = (stanza.get("Package", ""), stanza.get("Description-md5", ""))
        if "Description-en" in stanza:
            long_descriptions.setdefault(key, stanza["Description-en"])
    result: list[Package] = []
    seen: set[str] = set()
    translated = 0
    for stanza in packages:
        name = stanza.get("Package")
        if not name or name in seen:
            continue
        seen.add(name)
        description = long_descriptions.get((name, stanza.get("Description-md5", "")))
        if description is None:
            description = stanza.get("Description", "")
        else:
            translated += 1
        short, long = split_description(description)
        text = short + "\n" + long if long else short
        result.append(
            Package(
                name=name,
                source=parse_source(stanza.get("Source"), name),
                tags=parse_tag_field(stanza.get("Tag", "")),
                text=text,
            )
        )
    return result, {"packages_read": len(result), "with_translation": translated}


# --------------------------------------------------------------------------- selection


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(text.split())


def preference_key(package: Package) -> tuple[int, bool, int, str]:
    """Sort key choosing the representative binary package of a source (lowest wins)."""
    return (
        -len(package.tags),
        package.name.endswith(AUX_SUFFIXES),
        len(package.name),
        package.name,
    )


def select_documents(
    packages: Iterable[Package], kept_tags: Collection[str], min_words: int = MIN_WORDS
) -> tuple[list[Package], dict[str, int]]:
    """Select one tagged, distinct, long-enough package per source package.

    Tags are restricted to ``kept_tags``; packages left without tags are
    dropped; each source keeps its package with the most tags (then a name
    without an auxiliary suffix, then the shortest name, then alphabetical);
    in source order, a text identical to an earlier one is dropped, then texts
    under ``min_words`` words.  Returns the documents (sorted by name, tags
    sorted) and the counts after each stage.
    """
    kept = set(kept_tags)
    packages = list(packages)
    counts = {"packages": len(packages)}
    tagged = [Package(p.name, p.source, tuple(sorted({t for t in p.tags if t in kept})), p.text) for p in packages]
    tagged = [p for p in tagged if p.tags]
    counts["with_kept_tags"] = len(tagged)
    by_source: dict[str, list[Package]] = defaultdict(list)
    for package in tagged:
        by_source[package.source].append(package)
    chosen = [min(group, key=preference_key) for _, group in sorted(by_source.items())]
    counts["after_one_per_source"] = len(chosen)
    seen: set[str] = set()
    distinct = []
    for package in chosen:
        if package.text not in seen:
            seen.add(package.text)
            distinct.append(package)
    counts["after_dedup"] = len(distinct)
    documents = [p for p in distinct if word_count(p.text) >= min_words]
    counts["after_min_words"] = len(documents)
    return sorted(documents, key=lambda p: p.name), counts


def split_of(source: str) -> str:
    """Return ``"dev"`` for about 20% of source packages (by sha1), else ``"test"``."""
    return "dev" if int(hashlib.sha1(source.encode()).hexdigest(), 16) % 10 < DEV_BUCKETS else "test"


def split_dev(documents: list[Package], select: int = DEV_SELECT, seed: int = 0) -> tuple[list[Package], list[Package]]:
    """A seeded shuffle of the dev documents, cut in two: the first ``select`` (choices with labels: judge, prompt,
    teacher) and the rest (training without labels)."""
    shuffled = list(documents)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:select], shuffled[select:]


def draw_sample(documents: list[Package], size: int, seed: int = 0) -> list[Package]:
    """Draw ``size`` documents deterministically (by seed), returned sorted by name."""
    ordered = sorted(documents, key=lambda p: p.name)
    picked = random.Random(seed).sample(ordered, min(size, len(ordered)))
    return sorted(picked, key=lambda p: p.name)


def document_record(package: Package) -> dict[str, Any]:
    """Return the JSON object written for a document."""
    return {
        "id": package.name,
        "title": package.name,
        "text": package.text,
        "source": package.source,
        "labels": sorted(package.tags),
    }


def split_stats(documents: list[Package]) -> dict[str, Any]:
    """Document count, labels used, mean tags and words per document."""
    n = len(documents)
    return {
        "docs": n,
        "labels_used": len({t for p in documents for t in p.tags}),
        "mean_tags_per_doc": round(sum(len(p.tags) for p in documents) / n, 3) if n else 0.0,
        "mean_words_per_doc": round(sum(word_count(p.text) for p in documents) / n, 1) if n else 0.0,
    }


# --------------------------------------------------------------------------- files


def read_text(path: Path) -> str:
    """Read a possibly compressed index file (apt-helper decompresses lz4/zst)."""
    suffix = path.suffix
    if suffix == ".gz":
        data = gzip.decompress(path.read_bytes())
    elif suffix == ".xz":
        data = lzma.decompress(path.read_bytes())
    elif suffix == ".bz2":
        data = bz2.decompress(path.read_bytes())
    elif suffix in (".lz4", ".zst"):
        data = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(path)],
            check=True,
            capture_output=True,
        ).stdout
    else:
        data = path.read_bytes()
    return data.decode("utf-8", errors="replace")


def _index_files(lists_dir: Path, suffix: str) -> list[Path]:
    """Files in ``lists_dir`` named ``*<suffix>``, optionally compressed."""
    return sorted(
        p
        for p in lists_dir.iterdir()
        if p.is_file() and any(p.name.endswith(suffix + ext) for ext in _COMPRESSION_EXTS)
    )


def _strip_index_suffix(path: Path, suffix: str) -> str:
    name = path.name
    for ext in _COMPRESSION_EXTS[1:]:
        name = name.removesuffix(ext)
    return name.removesuffix(suffix)


def describe_lists(lists_dir: Path) -> list[dict[str, Any]]:
    """One entry per ``main`` amd64 Packages file: mirror, suite, codename, date, paths.

    The entries are ordered base suite first (codenames without ``-``, e.g.
    ``bookworm`` before ``bookworm-updates`` and ``bookworm-security``).
    """
    entries: list[dict[str, Any]] = []
    for packages in _index_files(lists_dir, PACKAGES_SUFFIX):
        prefix = _strip_index_suffix(packages, PACKAGES_SUFFIX)
        release: dict[str, str] = {}
        for name in ("_InRelease", "_Release"):
            candidate = lists_dir / (prefix + name)
            if candidate.is_file():
                release = parse_release(candidate.read_text(encoding="utf-8", errors="replace"))
                break
        translations = [
            p
            for p in _index_files(lists_dir, TRANSLATION_SUFFIX)
            if _strip_index_suffix(p, TRANSLATION_SUFFIX) == prefix
        ]
        mirror, _, dist = prefix.partition("_dists_")
        entries.append(
            {
                "mirror": mirror.replace("_", "/"),
                "dist": dist.replace("_", "/"),
                "suite": release.get("Suite", ""),
                "codename": release.get("Codename", dist),
                "version": release.get("Version", ""),
                "date": release.get("Date", ""),
                "packages_file": packages,
                "translation_file": translations[0] if translations else None,
            }
        )
    entries.sort(key=lambda e: ("-" in e["codename"], e["codename"], e["mirror"]))
    return entries


def _apt_options(lists_dir: Path) -> list[str]:
    return [
        "-o",
        f"Dir::State::Lists={lists_dir}",
        "-o",
        "Dir::Cache::pkgcache=",
        "-o",
        "Dir::Cache::srcpkgcache=",
        "-o",
        "Acquire::Languages=en",
    ]


def fetch_lists(lists_dir: Path) -> None:
    """Run ``apt-get update`` into ``lists_dir`` (the system's lists are untouched)."""
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["apt-get", "-q", "update", *_apt_options(lists_dir)],
        check=True,
        capture_output=True,
    )


def fetch_vocabulary(lists_dir: Path) -> tuple[str, str]:
    """Download the ``debtags`` package; return its version and vocabulary."""
    with tempfile.TemporaryDirectory(prefix="eztag-debtags-") as tmp:
        work = Path(tmp)
        subprocess.run(
            ["apt-get", "-q", "download", *_apt_options(lists_dir), "debtags"],
            check=True,
            capture_output=True,
            cwd=work,
        )
        deb = next(work.glob("debtags_*.deb"))
        version = deb.name.split("_")[1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        base = work / "x" / "usr" / "share" / "debtags"
        path = base / "vocabulary"
        text = read_text(path if path.is_file() else base / "vocabulary.gz")
    return version, text


def _write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write JSON lines; ``.gz`` paths are gzipped reproducibly (mtime 0)."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if path.suffix == ".gz":
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        ):
            gz.write(payload)
    else:
        path.write_bytes(payload)


def bare_label(label: Label) -> Label:
    """The bare-label variant of a tag: its name's own words (the id after the facet, separators as spaces), no
    description: 'works-with::audio' -> 'audio', 'accessibility::accessible-via:at-spi' -> 'accessible via at spi'."""
    words = label.id.partition("::")[2].replace("-", " ").replace(":", " ").replace("_", " ")
    return Label(id=label.id, text=" ".join(words.split()), description="", facet=label.facet)


def write_bare_labels(out_dir: Path) -> Path:
    """Write ``labels-bare.jsonl`` (the bare-label variant) from the ``labels.jsonl`` of a build in ``out_dir``."""
    lines = (Path(out_dir) / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    labels = [bare_label(Label(**json.loads(line))) for line in lines]
    _write_jsonl(Path(out_dir) / "labels-bare.jsonl", (vars(label) for label in labels))
    return Path(out_dir) / "labels-bare.jsonl"


# --------------------------------------------------------------------------- build


def build(out_dir: Path, lists_dir: Path | None = None, sample_size: int = 300, seed: int = 0) -> dict[str, Any]:
    """Fetch the lists and vocabulary, build the benchmark in ``out_dir``, return stats.

    Writes ``labels.jsonl`` (and its bare-label variant ``labels-bare.jsonl``), ``dev.jsonl.gz``, ``test.jsonl.gz``,
    ``dev-select.jsonl.gz`` and ``dev-train.jsonl.gz`` (``split_dev``), ``sample.jsonl`` (``sample_size`` dev
    documents) and ``stats.json``.
    ``lists_dir`` holds apt's package lists (a temporary directory when None).
    """
    out_dir = Path(out_dir)
    tmp = None
    if lists_dir is None:
        tmp = tempfile.mkdtemp(prefix="eztag-debtags-lists-")
        lists_dir = Path(tmp)
    lists_dir = Path(lists_dir)
    try:
        fetch_lists(lists_dir)
        releases = describe_lists(lists_dir)
        if not releases:
            raise RuntimeError(f"no *{PACKAGES_SUFFIX} file in {lists_dir}")
        package_stanzas: list[dict[str, str]] = []
        translation_stanzas: list[dict[str, str]] = []
        for release in releases:
            stanzas = parse_stanzas(read_text(release["packages_file"]))
            release["packages"] = len(stanzas)
            release["tagged_packages"] = sum(1 for s in stanzas if s.get("Tag"))
            package_stanzas += stanzas
            if release["translation_file"] is not None:
                translation_stanzas += parse_stanzas(read_text(release["translation_file"]))
        debtags_version, vocabulary_text = fetch_vocabulary(lists_dir)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    facets, tags = parse_vocabulary(vocabulary_text)
    labels = kept_labels(facets, tags)
    packages, join_counts = join_packages(package_stanzas, translation_stanzas)
    documents, counts = select_documents(packages, {label.id for label in labels})
    splits: dict[str, list[Package]] = {"dev": [], "test": []}
    for document in documents:
        splits[split_of(document.source)].append(document)
    sample = draw_sample(splits["dev"], sample_size, seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "labels.jsonl", (vars(label) for label in labels))
    write_bare_labels(out_dir)
    for name, docs in splits.items():
        _write_jsonl(out_dir / f"{name}.jsonl.gz", (document_record(p) for p in docs))
    for name, docs in zip(("dev-select", "dev-train"), split_dev(splits["dev"], seed=seed), strict=True):
        _write_jsonl(out_dir / f"{name}.jsonl.gz", (document_record(p) for p in docs))
    _write_jsonl(out_dir / "sample.jsonl", (document_record(p) for p in sample))

    base = releases[0]
    stats: dict[str, Any] = {
        "lists_date": base["date"],
        "suite": base["suite"],
        "codename": base["codename"],
        "version": base["version"],
        "mirror": base["mirror"],
        "releases": [
            {k: v for k, v in release.items() if k not in ("packages_file", "translation_file")}
            | {"packages_file": release["packages_file"].name}
            for release in releases
        ],
        "debtags_version": debtags_version,
        "kept_facets": list(KEPT_FACETS),
        "counts": {
            "packages_read": join_counts["packages_read"],
            "with_translation": join_counts["with_translation"],
            "with_kept_tags": counts["with_kept_tags"],
            "after_one_per_source": counts["after_one_per_source"],
            "after_dedup": counts["after_dedup"],
            "after_min_words": counts["after_min_words"],
        },
        "labels_in_vocabulary": len(labels),
        "labels_used": len({t for p in documents for t in p.tags}),
        "splits": {
            "all": split_stats(documents),
            "dev": split_stats(splits["dev"]),
            "test": split_stats(splits["test"]),
            "sample": split_stats(sample),
        },
        "sample_size": len(sample),
        "seed": seed,
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--lists-dir", type=Path, help="keep the downloaded apt lists here")
    parser.add_argument("--sample-size", type=int, default=300, help="documents in the demo sample (from dev)")
    parser.add_argument(
        "--bare-labels-only",
        action="store_true",
        help="only write labels-bare.jsonl (tag names' own words, no descriptions) from OUT/labels.jsonl; offline",
    )
    args = parser.parse_args()
    if args.bare_labels_only:
        print(f"wrote {write_bare_labels(args.out)}")
    else:
        stats = build(args.out, args.lists_dir, sample_size=args.sample_size)
        print(f"wrote {args.out}: {stats['splits']}")


if __name__ == "__main__":
    main()
