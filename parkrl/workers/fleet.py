"""The fleet: every worker group of a run, wired together, called as if local.

It starts the learner group (FSDP2 or DeepSpeed ranks) and the rollout group (engines), connects the
learner's rank 0 and every engine in the weight-sync group, and offers the controller one
method per phase. Batches are sharded over learner ranks and prompts over engines here, so the
controller never deals with ranks.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable, TypeVar

import torch

from parkrl.batch import TrajectoryBatch
from parkrl.config import Config, RoleResources
from parkrl.engines import Completion, SamplingSpec
from parkrl.sync.ipc import pair_by_gpu, shared_gpu
from parkrl.sync.process_group import sync_world_size
from parkrl.workers.engine import EngineWorker
from parkrl.workers.fsdp_learner import FSDPLearner
from parkrl.workers.group import WorkerDied, WorkerError, WorkerGroup, WorkerTimeout, wait_all
from parkrl.workers.learner import Learner
from parkrl.workers.reward_model import RewardModelWorker

T = TypeVar("T")


class Fleet:
    """Learner and rollout worker groups of one run, plus their weight-sync group."""

    def __init__(self, cfg: Config, model_path: str) -> None:
        t, res = cfg.trainer, cfg.resources
        n_learners = res.learner.num_workers
        self.cfg = cfg
        self.restarts = 0  # rollout workers restarted so far
        # Collective learner calls from two threads (one step off: an engine restart's re-sync in
        # the background beside the update) must not interleave across ranks.
        self._learner_lock = threading.RLock()
        self._closed = False
        self.learner = self.engines = None
        self.reward_models: list[WorkerGroup] = []
        try:
            self.learner = WorkerGroup("learner", learner_class(cfg.learner.backend), res.learner, t.runtime, t.worker_timeout_s,
                                       lambda rank: (cfg, model_path, rank, n_learners),
                                       bundle_extra=res.rollout if res.colocate else None)
            self.engines = WorkerGroup("rollout", EngineWorker, engine_resources(cfg), t.runtime, t.worker_timeout_s,
                                       lambda rank: (cfg, model_path, rank),
                                       colocate_with=self.learner if res.colocate else None)
            self.reward_models = [
                WorkerGroup(f"reward_model{k}", RewardModelWorker, spec.resources, t.runtime, t.worker_timeout_s,
                            lambda rank, spec=spec: (spec, rank))
                for k, spec in enumerate(cfg.reward.models)
            ]
            if res.colocate:  # the engines take their GPU memory first, then free it for the learner
                self.engines.call("peak_rss_gib")  # waits for every engine to be up
                self.engines.call("sleep")
            host, port = self.learner.call("free_address", ranks=[0])[0]
            self.learner.call("setup", host, port)
            dtypes = sorted(set(self.engines.call("weight_dtype")))  # each engine resolved rollout.dtype on its node
            if len(dtypes) > 1:
                raise RuntimeError(f"rollout.dtype={cfg.rollout.dtype!r} resolved to {' and '.join(dtypes)} on different "
                                   f"engines' nodes; set rollout.dtype=float32 or rollout.dtype=bfloat16")
            self._metas = self.learner.call("weight_metas", dtypes[0], ranks=[0])[0]
            mode = self.learner.call("resolve_rollout_correction", dtypes[0])[0]
            print(f"[parkrl] rollout correction: algorithm.rollout_correction={cfg.algorithm.rollout_correction} -> "
                  f"{mode} (engines compute in {dtypes[0]})", flush=True)
            if res.colocate:  # colocated pairs hand weights over by CUDA IPC instead of a sync group
                self._share_weights()
            else:
                self._join_sync_group()
        except BaseException:
            self.shutdown()
            raise

    def _join_sync_group(self) -> None:
        """Learner rank 0 is sync rank 0; the vLLM workers of engine i (one per tensor-parallel
        rank) follow (parkrl.sync.process_group.sync_rank). NCCL when both roles are on GPUs."""
        t, res = self.cfg.trainer, self.cfg.resources
        backend = "nccl" if res.learner.gpus_per_worker > 0 and res.rollout.gpus_per_worker > 0 else "gloo"
        host, port = self.learner.call("free_address", ranks=[0])[0]
        world = sync_world_size(len(self.engines), self.cfg.rollout.tensor_parallel_size)
        wait_all([
            self.learner.submit("join_sync_group", host, port, world, backend, ranks=[0]),
            self.engines.submit("join_sync_group", host, port, world, backend, t.sync_timeout_s),
        ], t.worker_timeout_s)

    # ---- phases -------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        """spec.n completions per prompt, prompts spread evenly over the engines.

        Engine chunks keep their global prompt offset in the seed, so results do not depend
        on the number of engines (nor on a retry after an engine restart).
        """
        return self._recovering(lambda: self._generate(prompts, spec))

    def _generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        parts = _split(len(prompts), len(self.engines))
        args = [(prompts[a:b], _offset(spec, a)) for a, b in parts.values()]
        results = self.engines.wait(self.engines.submit_each("generate", args, list(parts)))
        return [group for chunk in results for group in chunk]

    def episodes(self, samples: list[dict], spec: SamplingSpec) -> list:
        """One multi-turn episode (parkrl.envs.Episode) per sample, samples spread over the engines."""
        return self._recovering(lambda: self._episodes(samples, spec))

    def _episodes(self, samples: list[dict], spec: SamplingSpec) -> list:
        parts = _split(len(samples), len(self.engines))
        args = [(samples[a:b], spec, a) for a, b in parts.values()]
        results = self.engines.wait(self.engines.submit_each("run_episodes", args, list(parts)))
        return [ep for chunk in results for ep in chunk]

    def _recovering(self, call: Callable[[], T]) -> T:
        """Run `call`, a phase that involves the engines. If it fails and an engine's process is
        gone (killed, OOM, node lost), restart that engine, rebuild the sync group, push the
        current weights and run `call` again, at most `trainer.max_worker_restarts` restarts
        per run. Other failures (a learner death included) propagate: resume from a checkpoint.

        A death during the weight sync first shows as the learner's broadcast failing, so the
        engines are probed rather than trusting which error arrived first."""
        dead: list[int] = []
        while True:
            if self._closed:
                raise RuntimeError("the fleet is shut down")
            try:
                if dead:
                    self._restart_engines(dead)
                    dead = []
                return call()
            except (WorkerError, WorkerTimeout) as e:
                dead = self.engines.dead_ranks()
                if isinstance(e, WorkerDied) and e.role == "rollout" and e.rank not in dead:
                    dead.append(e.rank)
                limit = self.cfg.trainer.max_worker_restarts
                if not dead or self.restarts + len(dead) > limit:
                    if dead:
                        e.add_note(f"rollout {dead} died; {self.restarts} of trainer.max_worker_restarts={limit} "
                                   f"restarts already used")
                    raise
                print(f"[parkrl] {e}\n[parkrl] rollout {sorted(dead)} died: restarting, re-syncing weights and "
                      f"retrying ({self.restarts + len(dead)}/{limit} restarts)", flush=True)

    def _restart_engines(self, ranks: list[int]) -> None:
        for rank in ranks:
            self.engines.restart(rank)
            self.restarts += 1
        # Up first (within trainer.worker_timeout_s): a vLLM start can take longer than the
        # trainer.sync_timeout_s the survivors' join below waits for every rank.
        self.engines.call("peak_rss_gib", ranks=ranks)
        if self.cfg.resources.colocate:
            self._share_weights()
        else:
            self._join_sync_group()  # survivors still inside a broadcast join once it times out
            self._sync_weights()

    def per_token(self, batch: TrajectoryBatch, model: str) -> torch.Tensor:
        """Per-token values of every sample as an [N, T] float32 tensor in the batch's layout (0 on
        padding): logprobs under "policy" or "reference", or "critic" values. Each rank's rows,
        as wide as its longest response, go back to their places in the batch."""
        shards = batch.shard_indices(len(self.learner))
        with self._learner_lock:
            parts = self.learner.call_each("per_token", [(batch.select(s), model) for s in shards])
        out = torch.zeros(batch.response_ids.shape, dtype=torch.float32)
        for rows, values in zip(shards, parts):
            out[torch.as_tensor(rows, dtype=torch.long), : values.shape[1]] = values
        return out

    def update(self, batch: TrajectoryBatch) -> dict[str, float]:
        """One training step on the batch; returns the learner's metrics (same on every rank)."""
        shards = batch.shard_indices(len(self.learner))
        with self._learner_lock:
            return self.learner.call_each("update", [(batch.select(s),) for s in shards])[0]

    def sync_weights(self) -> None:
        """Broadcast the learner's weights to every engine (bucketed, with timeouts); colocated,
        wake the engines and hand each the weights of the learner rank on its GPU."""
        self._recovering(self._share_weights if self.cfg.resources.colocate else self._sync_weights)

    def release_engines(self) -> None:
        """Colocated mode: the engines free their GPU memory for the learner (sleep) until the
        next sync wakes them. A no-op otherwise."""
        if self.cfg.resources.colocate:
            self.engines.call("sleep")

    def _share_weights(self) -> None:
        with self._learner_lock:
            # The learner ranks return their cached GPU blocks (training's activations) first, so
            # that vLLM's weights fit (nothing is shared yet: this only empties the CUDA cache).
            self.learner.call("release_shared_weights")
            self.engines.call("wake_up", ["weights"])
            engine_gpus = [uuids[0] for uuids in self.engines.call("gpu_uuids")]
            handles = self.learner.call("share_weights", self._metas)
            try:
                ranks = pair_by_gpu([shared_gpu(h) for h in handles], engine_gpus)
                self.engines.call_each("receive_shared_weights", [(handles[r],) for r in ranks])
            finally:
                self.learner.call("release_shared_weights")
            self.engines.call("wake_up", ["kv_cache"])

    def _sync_weights(self) -> None:
        with self._learner_lock:
            wait_all([
                self.learner.submit("push_weights", self._metas),
                self.engines.submit("receive_weights", self._metas),
            ], self.cfg.trainer.worker_timeout_s)

    def peak_memory(self) -> dict[str, float]:
        """Peak RSS of the largest worker of each role, in GiB."""
        return {f"memory/{g.role}_peak_gib": max(self._recovering(lambda g=g: g.call("peak_rss_gib")))
                for g in (self.learner, self.engines)}

    def save_checkpoint(self, path: str) -> None:
        """Every learner rank writes its shards of the training state under `path`."""
        with self._learner_lock:
            self.learner.call("save_checkpoint", path)

    def load_checkpoint(self, path: str) -> None:
        """Every learner rank reads its training state from `path` (then call sync_weights)."""
        with self._learner_lock:
            self.learner.call("load_checkpoint", path)

    def save_hf(self, path: str) -> None:
        with self._learner_lock:
            self.learner.call("save_hf", path)

    def model_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Sum over `reward.models` of weight * score, pairs spread over each model's workers."""
        total = [0.0] * len(prompts)
        for group, spec in zip(self.reward_models, self.cfg.reward.models):
            parts = _split(len(prompts), len(group))
            scores = group.wait(group.submit_each("score", [(prompts[a:b], completions[a:b]) for a, b in parts.values()],
                                                  list(parts)))
            for i, v in enumerate(x for part in scores for x in part):
                total[i] += spec.weight * v
        return total

    def shutdown(self) -> None:
        """Shut every engine down first (frees its shared memory), then the learner ranks."""
        self._closed = True  # a phase still running in another thread fails instead of restarting engines
        for group in (self.engines, self.learner, *self.reward_models):
            if group is not None:
                try:
                    group.shutdown()
                except Exception as e:  # keep shutting the others down
                    print(f"[parkrl] shutting down {group.role}: {e}", flush=True)


def engine_resources(cfg: Config) -> RoleResources:
    """What each rollout worker reserves: `resources.rollout` with its GPUs multiplied by
    `rollout.tensor_parallel_size` (a GPU per tensor-parallel rank)."""
    res = cfg.resources.rollout
    return replace(res, gpus_per_worker=res.gpus_per_worker * cfg.rollout.tensor_parallel_size)


def learner_class(backend: str) -> type[Learner]:
    """The learner rank class for `learner.backend` (fsdp2 | deepspeed); DeepSpeed is imported
    only when chosen (it is an optional extra)."""
    if backend == "deepspeed":
        from parkrl.workers.deepspeed_learner import DeepSpeedLearner
        return DeepSpeedLearner
    return FSDPLearner


def _split(n: int, workers: int) -> dict[int, tuple[int, int]]:
    """Items [a, b) for each worker that gets any, n items spread as evenly as possible."""
    bounds = [n * i // workers for i in range(workers + 1)]
    return {i: (bounds[i], bounds[i + 1]) for i in range(workers) if bounds[i + 1] > bounds[i]}


def _offset(spec: SamplingSpec, k: int) -> SamplingSpec:
    from dataclasses import replace

    return replace(spec, seed=spec.seed + k * spec.n)
