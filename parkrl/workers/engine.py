"""The rollout worker: one inference engine (vLLM or HF) and its end of the weight sync."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from parkrl.config import Config
from parkrl.engines import Completion, SamplingSpec, make_engine
from parkrl.envs.runner import Episode
from parkrl.models import chat_prompt_ids, load_tokenizer, resolve_dtype
from parkrl.plugins import import_plugins
from parkrl.sync.process_group import sync_rank
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
        # `auto` resolved for this engine's device on its node
        self.dtype = str(resolve_dtype(r.dtype, on_gpu=cfg.resources.rollout.gpus_per_worker > 0)).removeprefix("torch.")
        self.engine = make_engine(
            r.backend, model_path, dtype=self.dtype,
            max_model_len=r.max_model_len, kv_cache_gib=r.kv_cache_gib, seed=cfg.trainer.seed + rank,
            cpu_ids=cpu_slot(rank, cpus), sleep_mode=cfg.resources.colocate,
            gpu_share=cfg.resources.rollout.gpus_per_worker if cfg.resources.colocate else 0.9,
            tensor_parallel_size=r.tensor_parallel_size,
        )
        self._closing = threading.Event()
        self._draining = False
        if cfg.resources.rollout.elastic() and _in_ray_actor() and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)  # Ray's own handler would end the process now
        if _in_ray_actor() and hasattr(self.engine, "dead"):
            threading.Thread(target=self._watch_engine, daemon=True, name="parkrl-engine-watch").start()

    def _watch_engine(self, every_s: float = 1.0) -> None:
        """End this actor's process once the engine's core process is gone (vLLM runs it in a
        child process on GPU). Ray then reports the worker dead and the fleet restarts it; a
        live actor around a dead engine would raise vLLM's EngineDeadError on every call, or
        wait forever in a call that was already waiting on the engine."""
        while not self._closing.wait(every_s):
            if self.engine.dead() and not self._closing.is_set():
                print(f"[parkrl] rollout[{self.rank}]: vLLM's engine core process is gone (EngineDeadError); "
                      f"ending this worker's process so that it is restarted", file=sys.stderr, flush=True)
                os._exit(1)

    def _on_sigterm(self, signum, frame) -> None:
        """A preemption notice (Kubernetes evicting a spot pod sends SIGTERM first): finish what is
        running and leave at the next step boundary (`draining`), instead of dying mid-step."""
        if self._closing.is_set():  # shutting down anyway: end as a SIGTERM would
            os._exit(128 + signum)
        self._draining = True
        print(f"[parkrl] rollout[{self.rank}]: SIGTERM (a preemption notice): draining at the step boundary",
              file=sys.stderr, flush=True)

    def draining(self) -> bool:
        """Whether this engine got a preemption notice and should leave the fleet."""
        return self._draining

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
            if e.remote:  # each episode is a session of the environment service
                from parkrl.envs.remote import remote_factory
                from parkrl.workers.env_service import env_endpoint

                self._episode_setup = (tok, remote_factory(env_endpoint(self.cfg), e.cls, dict(e.args)))
            else:
                self._episode_setup = (tok, environment_factory(e.cls, dict(e.args)))
        tok, make_env = self._episode_setup
        limits = EpisodeLimits(e.max_turns, e.max_total_tokens, self.cfg.rollout.max_model_len, e.workers,
                               e.step_timeout_s, e.on_error, e.max_inflight)
        return run_episodes(self.engine, make_env, samples, spec, tok, limits,
                            lambda messages: chat_prompt_ids(tok, messages), index_offset)

    def join_sync_group(self, host: str, port: int, world_size: int, backend: str, timeout_s: float,
                        index: int | None = None) -> None:
        """Join the sync group as the `index`-th engine in it (default: its rank): tensor-parallel
        rank k as `sync_rank(index, tp, k)`."""
        first = sync_rank(self.rank if index is None else index, self.cfg.rollout.tensor_parallel_size)
        self.engine.join_sync_group(host, port, first, world_size, backend, timeout_s)

    def receive_weights(self, wire_metas: list) -> None:
        self.engine.receive_weights(wire_metas)

    # colocated mode (resources.colocate): the engine shares a GPU with learner rank `rank`
    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self, tags: list[str]) -> None:
        self.engine.wake_up(tags)

    def gpu_uuids(self) -> list[str]:
        return self.engine.gpu_uuids()

    def receive_shared_weights(self, handles: bytes) -> None:
        self.engine.receive_shared_weights(handles)

    def peak_rss_gib(self) -> float:
        return peak_rss_gib()

    def shutdown(self) -> None:
        self._closing.set()  # the engine stops now on purpose: not a death
        self.engine.shutdown()


def _in_ray_actor() -> bool:
    """Whether this process is a Ray actor (not the driver, where `trainer.runtime=local` runs workers)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
