"""Shared fixtures: a tiny random-init Llama on the real SmolLM2 tokenizer, and a Ray cluster."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The embedded SmolLM2-135M-Instruct checkpoint (converted once into the parkrl cache)."""
    from parkrl.models import resolve_model_path

    return resolve_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer random-init Llama (hidden 128, head dim 64) with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def ray_session():
    """One private local Ray cluster for the integration tests (never `ray stop`)."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="parkrl-test-ray-")
    from parkrl.workers.cluster import worker_env

    env = worker_env()  # as parkrl's own cluster start-up, plus tests/ on the path (the user's code)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env["PYTHONPATH"]])
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             runtime_env={"env_vars": {**env, "RAY_AUTH_MODE": "disabled"}})
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def session_processes(sid: int) -> list[str]:
    """Command lines of the processes still in session `sid` (what a run left behind)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(p.info["pid"]) == sid:
                found.append(" ".join(p.info["cmdline"] or [])[:120])
        except (ProcessLookupError, PermissionError):
            pass
    return found


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
