"""vLLM engine adapter: batched sampling with per-token logprobs, and weight reloads."""
from __future__ import annotations

import os

from parkrl.engines.types import Completion, SamplingSpec

EXTENSION = "parkrl.sync.vllm_extension.WeightSyncExtension"


def _engine_env(cpu_ids: list[int]) -> None:
    """vLLM settings measured best on CPU hosts; a user's own environment variables win."""
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    import torch

    if torch.cuda.is_available():
        return
    # The one-time torch.compile of the sampler costs 9-25 s on CPU for identical outputs.
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    # Engine in this process: starts in ~15 s instead of ~38 s and generated ~1.7x faster on
    # 2 cores (phases run one after another, so generation may use every core).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vLLM's auto binding reserves a core for its scheduler; bind to this worker's cores.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cpu_ids)))


def _cpu_engine_args() -> dict:
    """Engine arguments measured best on CPU hosts (none on GPUs)."""
    import torch

    if torch.cuda.is_available():
        return {}
    # vLLM's CPU default is 128-token KV blocks; prefix caching shares only whole blocks, so a
    # group's n samples each prefilled the whole ~40-token chat prompt. With 32 (the smallest
    # block the CPU attention takes) the samples share its first blocks: a 64 x 32-token GRPO
    # generation computed 1988 instead of 3765 rows per layer and took 5.5 s instead of 8.9 s.
    return {"block_size": 32}


class VLLMEngine:
    """One vLLM `LLM` with parkrl's weight-sync extension in its workers."""

    def __init__(self, model_path: str, dtype: str, max_model_len: int, kv_cache_gib: float, seed: int,
                 cpu_ids: list[int], sleep_mode: bool = False, gpu_share: float = 0.9,
                 tensor_parallel_size: int = 1) -> None:
        _engine_env(cpu_ids)
        from vllm import LLM

        self._wants_logprobs: dict[str, bool] = {}  # multi-turn requests in flight
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=int(kv_cache_gib * (1 << 30)),
            enforce_eager=True,
            seed=seed,
            worker_extension_cls=EXTENSION,
            # Logprobs of the distribution actually sampled from (after temperature).
            logprobs_mode="processed_logprobs",
            # Whole prompts only: a partly prefilled request with its own seed makes vLLM rewind
            # the request's generator, which CPU generators cannot do (RuntimeError "CPU
            # Generator does not use offset" once many long multi-turn prompts are in flight).
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(max_model_len, 8192),
            enable_sleep_mode=sleep_mode,  # colocated with a learner rank on one GPU (CUDA only)
            # vLLM checks at start that this share of the GPU is free; colocated, it is this role's share.
            gpu_memory_utilization=gpu_share,
            tensor_parallel_size=tensor_parallel_size,
            # Its TP workers in processes of its own on this actor's GPUs: in a Ray placement group
            # vLLM would otherwise pick its Ray executor and place them in parkrl's bundles.
            distributed_executor_backend="mp" if tensor_parallel_size > 1 else None,
            **_cpu_engine_args(),
        )

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        """spec.n completions for each prompt (token ids), in prompt order."""
        from vllm.inputs import TokensPrompt

        params = [_params(spec, spec.seed + i * spec.n) for i in range(len(prompts))]  # sample j: seed + j
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [[_completion(c, spec.logprobs) for c in out.outputs] for out in outputs]

    # ---- continuous batching for multi-turn episodes (parkrl.envs.runner) --------------------
    def submit(self, request_id: str, prompt_ids: list[int], spec: SamplingSpec) -> None:
        """Queue one request (spec.n == 1); it joins the running batch at the next `poll`."""
        from vllm.inputs import TokensPrompt

        self._wants_logprobs[request_id] = spec.logprobs
        self.llm.llm_engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt_ids), _params(spec, spec.seed))

    def abort(self, request_ids: list[str]) -> None:
        """Drop requests still in the engine (an episode loop that failed)."""
        self.llm.llm_engine.abort_request(list(request_ids))
        for rid in request_ids:
            self._wants_logprobs.pop(rid, None)

    def poll(self) -> list[tuple[str, Completion]]:
        """Run one engine step; returns the requests that finished in it."""
        done = []
        for out in self.llm.llm_engine.step():
            if out.finished:
                done.append((out.request_id, _completion(out.outputs[0], self._wants_logprobs.pop(out.request_id))))
        return done

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        """Every vLLM worker of this engine joins the sync group: tensor-parallel rank k as `rank` + k."""
        self.llm.collective_rpc("parkrl_join_sync_group", args=(host, port, rank, world_size, backend, timeout_s))

    def receive_weights(self, wire_metas: list) -> None:
        """Receive a full state dict over the sync group, reload it, and drop stale KV cache."""
        self.llm.collective_rpc("parkrl_receive_weights", args=(wire_metas,))
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    # ---- colocated mode (GPU): give the GPU to the learner between generations ----------------
    def sleep(self) -> None:
        """Free the GPU memory of weights and KV cache (level 2: the next sync reloads every weight)."""
        self.llm.sleep(level=2)
        self.llm.collective_rpc("parkrl_empty_cache")  # torch's cached blocks outside vLLM's pool, for the learner

    def wake_up(self, tags: list[str]) -> None:
        """Re-allocate "weights" (before a sync) or "kv_cache" (after it)."""
        self.llm.wake_up(tags=tags)

    def gpu_uuids(self) -> list[str]:
        """The UUID of each vLLM worker's GPU (colocated mode: one)."""
        return self.llm.collective_rpc("parkrl_gpu_uuid")

    def receive_shared_weights(self, handles: bytes) -> None:
        """Load weights shared by CUDA IPC from the learner rank on this GPU; drop stale KV."""
        self.llm.collective_rpc("parkrl_receive_shared", args=(handles,))
        self.llm.reset_prefix_cache()

    def dead(self) -> bool:
        """Whether the engine core's process is gone (vLLM's monitor saw it exit; every call
        would raise EngineDeadError or, already in flight, wait forever). Never, in-process."""
        engine = getattr(self, "llm", None)  # gone after shutdown
        resources = getattr(engine.llm_engine.engine_core, "resources", None) if engine is not None else None
        return bool(getattr(resources, "engine_dead", False))

    def shutdown(self) -> None:
        """Stop the engine core (frees its /dev/shm segments) before the process goes away."""
        engine = getattr(self, "llm", None)
        if engine is not None:
            engine.llm_engine.engine_core.shutdown()
            del self.llm


def _params(spec: SamplingSpec, seed: int):
    from vllm import SamplingParams

    return SamplingParams(
        n=spec.n,
        temperature=spec.temperature,
        max_tokens=spec.max_new_tokens,
        logprobs=0 if spec.logprobs else None,
        seed=seed,
        stop=list(spec.stop) or None,
        include_stop_str_in_output=True,
    )


def _completion(c, logprobs: bool) -> Completion:
    ids = list(c.token_ids)
    lps = [c.logprobs[j][t].logprob for j, t in enumerate(ids)] if logprobs else []
    return Completion(ids, lps, "length" if c.finish_reason == "length" else "stop")
