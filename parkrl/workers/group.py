"""Worker groups: N instances of a worker class, as Ray actors or in this process.

The controller calls a group as if it were local (`group.call("update", batch)`). With
`trainer.runtime=ray` each worker is a Ray actor placed in the role's placement group
(`RayRuntime`); with `trainer.runtime=local` each is a plain object behind its own single
thread (`LocalRuntime`), so calls run concurrently across workers and in order on one worker,
exactly as with Ray actors, and `breakpoint()` works. Every wait has a timeout, and its error
names the stuck worker.
"""
from __future__ import annotations

import concurrent.futures as cf
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from parkrl.config import RoleResources


class WorkerTimeout(TimeoutError):
    """A worker did not answer within the configured timeout."""


class WorkerError(RuntimeError):
    """A worker raised; the message names the worker and the method."""


class WorkerDied(WorkerError):
    """A worker's process is gone (killed, crashed, its node lost)."""

    def __init__(self, message: str, role: str, rank: int) -> None:
        super().__init__(message)
        self.role, self.rank = role, rank


@dataclass
class Pending:
    """Calls in flight on some workers of a group."""

    group: "WorkerGroup"
    method: str
    ranks: list[int]
    handles: list[Any]


class WorkerGroup:
    """`resources.num_workers` instances of `cls`, created with `init_args(rank)`."""

    def __init__(self, role: str, cls: type, resources: RoleResources, runtime: str,
                 timeout_s: float, init_args: Callable[[int], tuple], colocate_with: "WorkerGroup | None" = None,
                 bundle_extra: RoleResources | None = None, slots: int = 0) -> None:
        """runtime: "ray" or "local"; colocate_with: put worker i into that group's placement
        bundle i (same node, same GPU); bundle_extra: resources this group's bundles reserve for
        such a guest group; slots > 0: elastic, `slots` placement groups of one worker each, the
        first `resources.num_workers` started (the others None until `fill`). All are Ray only."""
        self.role, self.timeout_s = role, timeout_s
        self.runtime: RayRuntime | LocalRuntime
        if runtime == "ray":
            self.runtime = RayRuntime(role, cls, resources, init_args, timeout_s,
                                      host=None if colocate_with is None else colocate_with.runtime,
                                      bundle_extra=bundle_extra, slots=slots)
        else:
            self.runtime = LocalRuntime(role, cls, resources.num_workers, init_args)
        self.workers: list[Any] = self.runtime.start_all(self)
        self.workers += [None] * (slots - len(self.workers))

    def __len__(self) -> int:
        return len(self.workers)

    def name(self, rank: int) -> str:
        return f"{self.role}[{rank}]"

    # ---- calling ------------------------------------------------------------------------------
    def submit(self, method: str, *args: Any, ranks: Sequence[int] | None = None) -> Pending:
        """Start `method(*args)` on `ranks` (default: all) without waiting."""
        ranks = [r for r, w in enumerate(self.workers) if w is not None] if ranks is None else list(ranks)
        return self.submit_each(method, [args] * len(ranks), ranks)

    def submit_each(self, method: str, args: Sequence[tuple], ranks: Sequence[int] | None = None) -> Pending:
        """Start `method(*args[k])` on rank `ranks[k]` (default ranks: 0..len(args)-1)."""
        ranks = list(range(len(args))) if ranks is None else list(ranks)
        handles = [self.runtime.submit(r, self.workers[r], method, a) for r, a in zip(ranks, args)]
        return Pending(self, method, ranks, handles)

    def wait(self, pending: Pending) -> list[Any]:
        """Results of calls submitted to this group, in the order of `pending.ranks`, waiting at
        most the group's timeout (see `wait_all` for the errors; `wait_all` also spans groups)."""
        return wait_all([pending], self.timeout_s)[0]

    def call(self, method: str, *args: Any, ranks: Sequence[int] | None = None) -> list[Any]:
        """Run `method(*args)` on `ranks` (default: all) and return their results in rank order."""
        return self.wait(self.submit(method, *args, ranks=ranks))

    def call_each(self, method: str, args: Sequence[tuple]) -> list[Any]:
        """Run `method(*args[r])` on each rank r and return the results in rank order."""
        return self.wait(self.submit_each(method, args))

    # ---- workers' lives -----------------------------------------------------------------------
    def dead_ranks(self, probe_s: float = 10.0) -> list[int]:
        """Ranks whose worker process is gone (Ray only): a trivial call to each fails as dead
        within `probe_s`. A busy worker does not answer in time and counts as alive."""
        return self.runtime.dead_ranks(self.workers, probe_s)

    def restart(self, rank: int) -> None:
        """Replace worker `rank` (dead or not) by a fresh one in the same placement slot (Ray only)."""
        self.workers[rank] = self.runtime.restart(rank, self.workers[rank])

    # elastic groups (Ray only): slots that lose or gain their worker
    def vacate(self, rank: int) -> None:
        """End worker `rank` (if still alive) and leave its slot empty."""
        worker, self.workers[rank] = self.workers[rank], None
        if worker is not None:
            self.runtime.kill(worker)

    def slot_ready(self, rank: int) -> bool:
        """Whether empty slot `rank` could take a worker now (its placement group is placed)."""
        return self.runtime.slot_ready(rank)

    def fill(self, rank: int) -> Any:
        """Start a worker in empty slot `rank`; returns a handle that is done once it is up."""
        self.workers[rank] = self.runtime.restart(rank, None)
        return self.workers[rank].__ray_ready__.remote()

    def node_ids(self) -> list[str]:
        """The Ray node each worker was placed on (Ray only), in rank order."""
        return [self.runtime.node_id(rank) for rank in range(len(self.workers))]

    def node_id(self, rank: int) -> str:
        """The Ray node slot `rank` is placed on now ("" if none: not placed yet, or its node lost)."""
        return self.runtime.node_id(rank)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Ask each worker to shut down (engines free their memory), waiting at most
        `timeout_s` in all, then end the workers even if that did not finish (a hung or dead
        worker). Raises the first worker's problem, after every worker was dealt with."""
        problems: list[Exception] = []
        try:
            pending = self.submit("shutdown")
            deadline = time.monotonic() + min(timeout_s, self.timeout_s)
            for rank, handle in zip(pending.ranks, pending.handles):  # each on its own: one death must not skip the others
                try:
                    wait_all([Pending(self, "shutdown", [rank], [handle])], max(0.1, deadline - time.monotonic()))
                except (WorkerError, WorkerTimeout) as e:
                    problems.append(e)
        finally:
            self.runtime.close(self.workers)
        if problems:
            raise problems[0]


class RayRuntime:
    """Each worker a Ray actor, worker i in bundle i of the role's placement group, or of the
    `host` runtime's group when colocated (the host owns it and removes it). Elastic (the
    rollout role with min_workers < max_workers): worker i in a placement group of its own, one
    per slot up to `slots`; the first `resources.num_workers` must be placed at start, the others
    wait for capacity (an autoscaler sees their demand) and a lost node's group is re-placed by
    Ray, so a slot is filled again whenever its group is ready (`slot_ready`)."""

    def __init__(self, role: str, cls: type, resources: RoleResources, init_args: Callable[[int], tuple],
                 timeout_s: float, host: "RayRuntime | None" = None, bundle_extra: RoleResources | None = None,
                 slots: int = 0) -> None:
        self._cls, self._resources, self._init_args, self._n = cls, resources, init_args, resources.num_workers
        self.bundle = _bundle(resources, bundle_extra)  # what each bundle reserves, guests' share included
        self.owns_placement_group = host is None
        self.elastic = slots > 0
        if host is not None:
            self.placement_group = host.placement_group
            return
        from ray.util.placement_group import placement_group

        labels = dict(resources.node_labels)
        if self.elastic:  # one group per slot: a lost node strands no other slot
            self.groups = [placement_group([dict(self.bundle)], name=f"parkrl-{role}-{i}",
                                           bundle_label_selector=[labels] if labels else None) for i in range(slots)]
            self._wait_placed(role, self.groups[: self._n], timeout_s)
            return
        self.placement_group = placement_group([dict(self.bundle) for _ in range(self._n)], strategy="PACK",
                                               name=f"parkrl-{role}",
                                               bundle_label_selector=[labels] * self._n if labels else None)
        self._wait_placed(role, [self.placement_group], timeout_s)

    def _wait_placed(self, role: str, groups: list[Any], timeout_s: float) -> None:
        from ray.util.placement_group import remove_placement_group

        deadline = time.monotonic() + timeout_s
        for pg in groups:
            while not pg.wait(min(1.0, max(deadline - time.monotonic(), 0.0))):  # Ctrl-C between
                if time.monotonic() < deadline:
                    continue
                for g in self._own_groups():
                    remove_placement_group(g)
                raise WorkerTimeout(
                    f"could not place {self._n} {role} worker(s) of {self.bundle} within {timeout_s:.0f} s: the "
                    f"cluster lacks the resources (see resources.{role}.* and `ray status`)"
                )

    def _own_groups(self) -> list[Any]:
        """The placement groups this runtime made (and removes)."""
        return self.groups if self.elastic else [self.placement_group]

    def _slot(self, rank: int) -> tuple[Any, int]:
        """(placement group, bundle index) of worker `rank`."""
        return (self.groups[rank], 0) if self.elastic else (self.placement_group, rank)

    def slot_ready(self, rank: int) -> bool:
        """Whether slot `rank`'s placement group is placed now (elastic only; never waits)."""
        return self.groups[rank].wait(0)

    def start_all(self, group: WorkerGroup) -> list[Any]:
        """One actor per rank; they start in the background (their first call waits for them)."""
        return [self._start(rank) for rank in range(self._n)]

    def _start(self, rank: int) -> Any:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group, index = self._slot(rank)
        return ray.remote(self._cls).options(
            num_cpus=self._resources.cpus_per_worker,
            num_gpus=self._resources.gpus_per_worker,
            resources=dict(self._resources.custom_resources) or None,
            # Ray merges an actor's runtime_env over the job's (ray.init's, parkrl's worker_env):
            # field by field, the actor's replacing the job's, except env_vars, merged name by name
            # (docs.ray.io "Handling Dependencies", Inheritance; tests/test_placement.py checks it).
            runtime_env=dict(self._resources.runtime_env) or None,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index),
        ).remote(*self._init_args(rank))

    def submit(self, rank: int, worker: Any, method: str, args: tuple) -> Any:
        return getattr(worker, method).remote(*args)

    def restart(self, rank: int, worker: Any) -> Any:
        """Kill `worker` (if any, if still alive) and start a fresh actor in its bundle."""
        if worker is not None:
            self.kill(worker)
        return self._start(rank)

    @staticmethod
    def kill(worker: Any) -> None:
        import ray

        try:
            ray.kill(worker, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def dead_ranks(self, workers: list[Any], probe_s: float) -> list[int]:
        import ray

        probes = {r: w.__ray_ready__.remote() for r, w in enumerate(workers) if w is not None}
        ray.wait(list(probes.values()), num_returns=len(probes), timeout=probe_s)
        return [r for r, ref in probes.items() if self.done(ref) and _is_death(_error(self, ref))]

    def node_id(self, rank: int) -> str:
        from ray.util.placement_group import placement_group_table

        group, index = self._slot(rank)
        return placement_group_table(group)["bundles_to_node_id"].get(index, "")

    def close(self, workers: list[Any]) -> None:
        """Kill every actor, then remove the placement group if it is this group's own."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for w in workers:
            if w is not None:
                ray.kill(w)
        if self.owns_placement_group:
            for group in self._own_groups():
                remove_placement_group(group)

    # Handles are Ray object refs.
    @staticmethod
    def done(handle: Any) -> bool:
        import ray

        ready, _ = ray.wait([handle], timeout=0)
        return bool(ready)

    @staticmethod
    def result(handle: Any) -> Any:
        import ray

        return ray.get(handle)

    @staticmethod
    def wait_any(handles: list[Any], timeout_s: float) -> None:
        import ray

        ray.wait(handles, num_returns=1, timeout=timeout_s)


class LocalRuntime:
    """Each worker a plain object in this process, behind its own single-thread executor."""

    def __init__(self, role: str, cls: type, n: int, init_args: Callable[[int], tuple]) -> None:
        self._role, self._cls, self._init_args = role, cls, init_args
        self._threads = [cf.ThreadPoolExecutor(1, thread_name_prefix=f"{role}{i}") for i in range(n)]

    def start_all(self, group: WorkerGroup) -> list[Any]:
        """Build every worker on its own thread, all at once, within the group's timeout."""
        made = [t.submit(self._cls, *self._init_args(i)) for i, t in enumerate(self._threads)]
        return group.wait(Pending(group, "__init__", list(range(len(made))), made))

    def submit(self, rank: int, worker: Any, method: str, args: tuple) -> cf.Future:
        return self._threads[rank].submit(getattr(worker, method), *args)

    def restart(self, rank: int, worker: Any) -> Any:
        raise RuntimeError(f"{self._role}[{rank}]: workers can be restarted only with trainer.runtime=ray")

    def dead_ranks(self, workers: list[Any], probe_s: float) -> list[int]:
        return []  # they live in this process

    def node_id(self, rank: int) -> str:
        raise RuntimeError(f"{self._role}: workers have Ray node ids only with trainer.runtime=ray")

    def close(self, workers: list[Any]) -> None:
        for t in self._threads:
            t.shutdown(wait=False, cancel_futures=True)

    # Handles are concurrent.futures.Future.
    @staticmethod
    def done(handle: cf.Future) -> bool:
        return handle.done()

    @staticmethod
    def result(handle: cf.Future) -> Any:
        return handle.result()

    @staticmethod
    def wait_any(handles: list[cf.Future], timeout_s: float) -> None:
        cf.wait(handles, timeout=timeout_s, return_when=cf.FIRST_COMPLETED)


def wait_all(pendings: Sequence[Pending], timeout_s: float) -> list[list[Any]]:
    """Wait for every call in `pendings` (possibly of several groups) for at most `timeout_s`.

    Raises WorkerTimeout naming each worker still busy, or WorkerError naming the first worker
    that raised. Waiting on all together lets collectives between groups (the weight sync) run.
    """
    def done(p: Pending, k: int) -> bool:
        return p.group.runtime.done(p.handles[k])

    def error(p: Pending, k: int) -> BaseException | None:
        return _error(p.group.runtime, p.handles[k])

    deadline = time.monotonic() + timeout_s
    slots = [(p, k) for p in pendings for k in range(len(p.handles))]
    while True:
        busy = [(p, k) for p, k in slots if not done(p, k)]
        failed = [(p, k) for p, k in slots if done(p, k) and error(p, k) is not None]
        if failed:  # the worker that raised is the root cause; peers waiting on it would only time out
            failed.sort(key=lambda pk: not _is_death(error(*pk)))  # a death explains the rest
            p, k = failed[0]
            e = error(p, k)
            name = f"{p.group.name(p.ranks[k])}.{p.method}"
            if _is_death(e):
                raise WorkerDied(f"{name}: the worker died ({type(e).__name__}: {e})", p.group.role, p.ranks[k]) from e
            raise WorkerError(f"{name} failed: {e}") from e
        left = deadline - time.monotonic()
        if not busy or left <= 0:
            break
        kind = type(busy[0][0].group.runtime)  # one runtime per run; only its handles can be waited on together
        kind.wait_any([p.handles[k] for p, k in busy if isinstance(p.group.runtime, kind)], min(left, 1.0))
    stuck = [f"{p.group.name(p.ranks[k])}.{p.method}" for p, k in slots if not done(p, k)]
    if stuck:
        raise WorkerTimeout(
            f"{', '.join(stuck)} did not finish within {timeout_s:.0f} s (trainer.worker_timeout_s); "
            f"the worker may be hung or dead"
        )
    return [[p.group.runtime.result(h) for h in p.handles] for p in pendings]


def _bundle(resources: RoleResources, extra: RoleResources | None) -> dict[str, float]:
    """One placement bundle: a worker's CPUs, GPUs and custom resources, plus `extra`'s."""
    bundle: dict[str, float] = {}
    for res in (resources, extra):
        if res is None:
            continue
        for key, amount in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker), *res.custom_resources.items()):
            if amount:
                bundle[key] = bundle.get(key, 0.0) + amount
    return bundle


def _error(runtime: RayRuntime | LocalRuntime, handle: Any) -> BaseException | None:
    """The exception a finished call raised, or None."""
    try:
        runtime.result(handle)
    except Exception as e:  # noqa: BLE001 - returned to the caller to re-raise with a name
        return e
    return None


def _is_death(error: BaseException | None) -> bool:
    """Whether a Ray call failed because its actor process is gone (not because it raised)."""
    return error is not None and any(c.__name__ == "RayActorError" for c in type(error).__mro__)
