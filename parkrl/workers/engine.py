"""The rollout worker: one inference engine (vLLM or HF) and its end of the weight sync."""
from __future__ import annotations

from typing import Any

from parkrl.config import Config
from parkrl.engines import Completion, SamplingSpec, make_engine
from parkrl.envs.runner import Episode
from parkrl.models import chat_prompt_ids, load_tokenizer, resolve_dtype
from parkrl.plugins import import_plugins
from parkrl.tools.sandboxed import connect, endpoint_for
from parkrl.workers.process import cpu_slot, peak_rss_gib, set_torch_threads


class EngineWorker:
    """Holds one engine; generates completions and receives weights from the learner."""

    def __init__(self, cfg: Config, model_path: str, rank: int) -> None:
        cpus = cfg.resources.rollout.cpus_per_worker
        set_torch_threads(cpus)
        import_plugins(cfg.trainer.imports)
        r = cfg.rollout
        self.rank = rank
        self.cfg, self.model_path = cfg, model_path
        self.dtype = str(resolve_dtype(r.dtype)).removeprefix("torch.")  # `auto` resolved on this engine's node
        self.engine = make_engine(
            r.backend, model_path, dtype=self.dtype,
            max_model_len=r.max_model_len, kv_cache_gib=r.kv_cache_gib, seed=cfg.trainer.seed + rank,
            cpu_ids=cpu_slot(rank, cpus), sleep_mode=cfg.resources.colocate,
            gpu_share=cfg.resources.rollout.gpus_per_worker if cfg.resources.colocate else 0.9,
        )

    def weight_dtype(self) -> str:
        """The dtype this engine holds its weights in: the learner casts to it before sending, so
        the sync carries no more bytes than the engine keeps and vLLM casts nothing."""
        return self.dtype

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        return self.engine.generate(prompts, spec)

    def run_episodes(self, samples: list[dict[str, Any]], spec: SamplingSpec, index_offset: int) -> list[Episode]:
        """One multi-turn episode per sample, with `env.cls` environments, on this engine."""
        from parkrl.envs import EpisodeLimits, environment_factory, run_episodes

        e, sb = self.cfg.env, self.cfg.sandbox
        if not hasattr(self, "_episode_setup"):
            if sb.url:  # the service the environments' tools talk to (started by the trainer, or given)
                connect(endpoint_for(sb.url, sb.token_file, sb.call_timeout_s, sb.on_server_lost, sb.busy_wait_s))
            tok = load_tokenizer(self.model_path)
            self._episode_setup = (tok, environment_factory(e.cls, dict(e.args)))
        tok, make_env = self._episode_setup
        limits = EpisodeLimits(e.max_turns, e.max_total_tokens, self.cfg.rollout.max_model_len, e.workers,
                               e.step_timeout_s, e.on_error)
        return run_episodes(self.engine, make_env, samples, spec, tok, limits,
                            lambda messages: chat_prompt_ids(tok, messages), index_offset)

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        self.engine.join_sync_group(host, port, rank, world_size, backend, timeout_s)

    def receive_weights(self, wire_metas: list) -> None:
        self.engine.receive_weights(wire_metas)

    # colocated mode (resources.colocate): the engine shares a GPU with learner rank `rank`
    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self, tags: list[str]) -> None:
        self.engine.wake_up(tags)

    def receive_shared_weights(self, handles: bytes) -> None:
        self.engine.receive_shared_weights(handles)

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        self.engine.shutdown()
