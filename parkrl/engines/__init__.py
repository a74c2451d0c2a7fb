"""Turning prompts into completions: engine adapters (vLLM, HF generate)."""
from parkrl.engines.types import Completion, SamplingSpec


def make_engine(backend: str, model_path: str, dtype: str, max_model_len: int, kv_cache_gib: float,
                seed: int, cpu_ids: list[int], sleep_mode: bool = False, gpu_share: float = 0.9,
                tensor_parallel_size: int = 1):
    """The engine adapter for `rollout.backend` ("vllm" or "hf").

    cpu_ids: the cores a CPU engine binds its threads to (ignored on GPU and by HF).
    sleep_mode: vLLM can free its GPU memory between generations (colocated mode), where
    gpu_share is the fraction of the GPU the engine may assume free at start.
    tensor_parallel_size: vLLM's, one GPU per rank (the config allows more than 1 only for vLLM).
    """
    if backend == "vllm":
        from parkrl.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, dtype, max_model_len, kv_cache_gib, seed, cpu_ids, sleep_mode, gpu_share,
                          tensor_parallel_size)
    if backend == "hf":
        from parkrl.engines.hf_engine import HFEngine

        return HFEngine(model_path, dtype, max_model_len, seed)
    raise ValueError(f"rollout.backend={backend!r}: choose vllm or hf")


__all__ = ["Completion", "SamplingSpec", "make_engine"]
