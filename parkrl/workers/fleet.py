"""The fleet: every worker group of a run, wired together, called as if local.

It starts the learner group (FSDP2 or DeepSpeed ranks) and the rollout group (engines), connects the
learner's rank 0 and every engine in the weight-sync group, and offers the controller one
method per phase. Batches are sharded over learner ranks and prompts over engines here, so the
controller never deals with ranks.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any, Callable, TypeVar

import torch

from parkrl.batch import TrajectoryBatch
from parkrl.config import Config, RoleResources
from parkrl.engines import Completion, SamplingSpec
from parkrl.sync.ipc import pair_by_gpu, shared_gpu
from parkrl.sync.process_group import sync_world_size
from parkrl.workers.engine import EngineWorker
from parkrl.workers.fsdp_learner import FSDPLearner
from parkrl.workers.group import WorkerDied, WorkerError, WorkerGroup, WorkerTimeout, _error, wait_all
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
        r = res.rollout
        self.min_engines, self.max_engines = r.worker_bounds()
        self.elastic = r.elastic()
        self.live = list(range(r.num_workers))  # engine slots in service, in sync-rank order
        self.joining: dict[int, Any] = {}  # slot -> handle done once its new engine is up
        self.lost_total = self.joined_total = 0  # engines lost / joined in this run
        self._reported = (0, 0)  # the totals at the last `elastic_metrics`
        self.nodes: dict[int, str] = {}  # engine slot -> the Ray node it runs on (elastic)
        self.started: dict[int, float] = {}  # engine slot -> when its new engine was started
        self.drained_nodes: set[str] = set()  # nodes whose engines left on a preemption notice
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
                                       colocate_with=self.learner if res.colocate else None,
                                       slots=self.max_engines if self.elastic else 0)
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
            if self.elastic:
                self._note_nodes()
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
        world = sync_world_size(len(self.live), self.cfg.rollout.tensor_parallel_size)
        wait_all([
            self.learner.submit("join_sync_group", host, port, world, backend, ranks=[0]),
            self.engines.submit_each("join_sync_group", [(host, port, world, backend, t.sync_timeout_s, k)
                                                         for k in range(len(self.live))], self.live),
        ], t.worker_timeout_s)

    # ---- phases -------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        """spec.n completions per prompt, prompts spread evenly over the engines.

        Engine chunks keep their global prompt offset in the seed, so results do not depend
        on the number of engines (nor on a retry after an engine restart).
        """
        return self._recovering(lambda: self._generate(prompts, spec))

    def _generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Completion]]:
        parts = _split(len(prompts), len(self.live))
        args = [(prompts[a:b], _offset(spec, a)) for a, b in parts.values()]
        pending = self.engines.submit_each("generate", args, [self.live[k] for k in parts])
        _chaos("generate", self)
        return [group for chunk in self.engines.wait(pending) for group in chunk]

    def episodes(self, samples: list[dict], spec: SamplingSpec) -> list:
        """One multi-turn episode (parkrl.envs.Episode) per sample, samples spread over the engines."""
        return self._recovering(lambda: self._episodes(samples, spec))

    def _episodes(self, samples: list[dict], spec: SamplingSpec) -> list:
        parts = _split(len(samples), len(self.live))
        args = [(samples[a:b], spec, a) for a, b in parts.values()]
        results = self.engines.wait(self.engines.submit_each("run_episodes", args, [self.live[k] for k in parts]))
        return [ep for chunk in results for ep in chunk]

    def _recovering(self, call: Callable[[], T]) -> T:
        """Run `call`, a phase that involves the engines. If it fails and an engine's process is
        gone (killed, OOM, node lost), restart that engine, rebuild the sync group, push the
        current weights and run `call` again, at most `trainer.max_worker_restarts` restarts
        per run. Other failures (a learner death included) propagate: resume from a checkpoint.
        An elastic fleet instead drops the dead engines and re-plans `call` over the others
        while at least `min_workers` live (their slots are filled again at a step boundary).

        A death during the weight sync first shows as the learner's broadcast failing, so the
        engines are probed rather than trusting which error arrived first."""
        dead: list[int] = []
        regroup = False
        while True:
            if self._closed:
                raise RuntimeError("the fleet is shut down")
            try:
                if dead:
                    self._restart_engines(dead)
                    dead = []
                if regroup:  # the survivors' sync group lost members: a new one, and current weights
                    self._regroup()
                    regroup = False
                return call()
            except (WorkerError, WorkerTimeout) as e:
                dead = self._dead_engines(e)
                if self.elastic and dead and len(self.live) - len(dead) >= self.min_engines:
                    self._lose(dead, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                    dead, regroup = [], True
                    continue
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
            pushing = self.learner.submit("push_weights", self._metas)
            receiving = self.engines.submit("receive_weights", self._metas, ranks=self.live)
            _chaos("sync", self)
            wait_all([pushing, receiving], self.cfg.trainer.worker_timeout_s)

    # ---- an elastic fleet (resources.rollout.min_workers/max_workers) ----------------------------
    def _dead_engines(self, e: BaseException) -> list[int]:
        """The live engines whose process is gone after the failure `e`. An elastic fleet first
        asks which engines' nodes are down (immediate, while the survivors may still sit in a
        collective with the lost one); else each engine is probed (a busy one counts as alive)."""
        dead = []
        if self.elastic:
            alive = _alive_nodes()
            dead = [r for r in self.live if self.nodes.get(r) and self.nodes[r] not in alive]
        if not dead:
            dead = [r for r in self.engines.dead_ranks() if r in self.live]
        if isinstance(e, WorkerDied) and e.role == "rollout" and e.rank not in dead:
            dead.append(e.rank)
        return dead

    def _regroup(self) -> None:
        """A new sync group of the live engines, and the current weights pushed to them."""
        self._join_sync_group()
        self._sync_weights()

    def _note_nodes(self) -> None:
        """Remember each live engine's node (a lost node's placement no longer says it)."""
        self.nodes.update({r: n for r, n in enumerate(self.engines.node_ids()) if r in self.live and n})

    def _lose(self, ranks: list[int], why: str, died: bool = True) -> None:
        """Take engine slots `ranks` out of service (their workers died, or leave: `died=False`),
        saying which node and why."""
        alive = _alive_nodes()
        for r in ranks:
            node = self.nodes.get(r, "")
            cause = (f"{why} on node {node[:12]}" if not died else f"node {node[:12]} is gone"
                     if node and node not in alive else f"its worker on node {node[:12]} died: {why[:160]}")
            self.engines.vacate(r)
            self.live.remove(r)
            self.lost_total += 1
            print(f"[parkrl] event: rollout[{r}] lost ({cause}); {len(self.live)} engine(s) go on "
                  f"(resources.rollout.min_workers={self.min_engines}); the step re-plans its batch over them",
                  flush=True)

    def at_step_boundary(self) -> None:
        """Between steps (the engines idle, weights current): engines draining after a preemption
        notice (SIGTERM) leave; engines started earlier that are up join (a new sync group, the
        current weights); empty slots whose placement group is placed get a new engine, which
        joins at a later boundary. A no-op for a fixed fleet."""
        if not self.elastic:
            return
        draining = [r for r, d in zip(self.live, self._recovering(lambda: self.engines.call("draining", ranks=self.live)))
                    if d and len(self.live) > self.min_engines]
        if draining:
            self.drained_nodes.update(self.nodes.get(r, "") for r in draining)  # going away: start nothing there
            self._lose(draining, "a preemption notice (SIGTERM): drained at the step boundary", died=False)
        up = [r for r, handle in self.joining.items() if self.engines.runtime.done(handle)]
        ready = []
        for r in up:
            problem = _error(self.engines.runtime, self.joining.pop(r))
            if problem is None:
                ready.append(r)
            else:
                print(f"[parkrl] event: rollout[{r}] failed to start ({type(problem).__name__}); its slot is "
                      f"tried again later", flush=True)
                self.engines.vacate(r)
        if draining or ready:
            self.live = sorted(self.live + ready)
            self._note_nodes()
            self._recovering(self._regroup)
            for r in ready:
                self.joined_total += 1
                print(f"[parkrl] event: rollout[{r}] joined on node {self.nodes.get(r, '')[:12]} after "
                      f"{time.monotonic() - self.started.pop(r, time.monotonic()):.1f} s; {len(self.live)} engine(s) "
                      f"from the next step", flush=True)
        for r in range(self.max_engines):
            if (r not in self.live and r not in self.joining and self.engines.slot_ready(r)
                    and self.engines.node_id(r) not in self.drained_nodes):
                self.joining[r] = self.engines.fill(r)
                self.started[r] = time.monotonic()

    def elastic_metrics(self) -> dict[str, float]:
        """workers/rollout_alive now, workers/lost and workers/joined since the last call."""
        lost, joined = self.lost_total - self._reported[0], self.joined_total - self._reported[1]
        self._reported = (self.lost_total, self.joined_total)
        return {"workers/rollout_alive": float(len(self.live)), "workers/lost": float(lost),
                "workers/joined": float(joined)}

    def peak_memory(self) -> dict[str, float]:
        """Peak RSS of the largest worker of each role, in GiB."""
        return {"memory/learner_peak_gib": max(self.learner.call("peak_rss_gib")),
                "memory/rollout_peak_gib": max(self._recovering(lambda: self.engines.call("peak_rss_gib",
                                                                                         ranks=self.live)))}

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


# Test-only (tests/chaos_run.py): called with ("generate" | "sync", the fleet) once those calls are on their way.
_CHAOS_HOOK: Callable[[str, "Fleet"], None] | None = None


def _chaos(phase: str, fleet: "Fleet") -> None:
    if _CHAOS_HOOK is not None:
        _CHAOS_HOOK(phase, fleet)


def _alive_nodes() -> set[str]:
    """Ids of the Ray nodes alive now (empty off Ray)."""
    import ray

    if not ray.is_initialized():
        return set()
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
