"""The rollout worker: one inference engine (vLLM or HF) and its end of the weight sync."""
from __future__ import annotations

from parkrl.config import Config
from parkrl.models.loading import resolve_dtype
from parkrl.rollout import Completion, SamplingSpec, make_engine
from parkrl.workers.process import import_plugins, cpu_slot, peak_rss_gib, set_torch_threads


class RolloutWorker:
    """Holds one engine; generates completions and receives weights from the learner."""

    def __init__(self, cfg: Config, model_path: str, rank: int) -> None:
        cpus = cfg.resources.rollout.cpus_per_worker
        set_torch_threads(cpus)
        import_plugins(cfg.trainer.imports)
        r = cfg.rollout
        self.rank = rank
        self.engine = make_engine(
            r.backend, model_path, dtype=str(resolve_dtype(r.dtype)).removeprefix("torch."),
            max_model_len=r.max_model_len, kv_cache_gib=r.kv_cache_gib, seed=cfg.trainer.seed + rank,
            cpu_ids=cpu_slot(rank, cpus),
        )

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        return self.engine.generate(prompts, spec)

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        self.engine.join_sync_group(host, port, rank, world_size, backend, timeout_s)

    def receive_weights(self, wire_metas: list) -> None:
        self.engine.receive_weights(wire_metas)

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        self.engine.shutdown()
