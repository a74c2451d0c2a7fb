"""Worker groups: N instances of a worker class, as Ray actors or in this process.

The controller calls a group as if it were local (`group.call("update", batch)`). With
`trainer.runtime=ray` each worker is a Ray actor placed in the role's placement group; with
`trainer.runtime=local` each is a plain object behind its own single thread, so calls run
concurrently across workers and in order on one worker, exactly as with Ray actors, and
`breakpoint()` works. Every wait has a timeout, and its error names the stuck worker.
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
                 bundle_extra: RoleResources | None = None) -> None:
        """colocate_with: put worker i into that group's placement bundle i (same node, same
        GPU); bundle_extra: resources this group's bundles reserve for such a guest group."""
        self.role, self.runtime, self.timeout_s = role, runtime, timeout_s
        n = resources.num_workers
        self._cls, self._resources, self._init_args = cls, resources, init_args
        self._bundle_extra, self._owns_pg = bundle_extra, colocate_with is None
        if runtime == "ray" and colocate_with is not None:
            self._pg = colocate_with._pg
            self.workers = [self._start_actor(i) for i in range(n)]
        elif runtime == "ray":
            from ray.util.placement_group import placement_group

            labels = dict(resources.node_labels)
            self._pg = placement_group([self._bundle() for _ in range(n)], strategy="PACK", name=f"parkrl-{role}",
                                       bundle_label_selector=[labels] * n if labels else None)
            if not self._pg.wait(timeout_s):
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self._pg)
                raise WorkerTimeout(
                    f"could not place {n} {role} worker(s) of {self._bundle()} within {timeout_s:.0f} s: the "
                    f"cluster lacks the resources (see resources.{role}.* and `ray status`)"
                )
            self.workers = [self._start_actor(i) for i in range(n)]
        else:
            self._threads = [cf.ThreadPoolExecutor(1, thread_name_prefix=f"{role}{i}") for i in range(n)]
            made = [t.submit(cls, *init_args(i)) for i, t in enumerate(self._threads)]
            self.workers = self._wait(Pending(self, "__init__", list(range(n)), made))

    def _bundle(self) -> dict[str, float]:
        bundle: dict[str, float] = {}
        for res in (self._resources, self._bundle_extra):
            if res is None:
                continue
            for key, amount in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker), *res.custom_resources.items()):
                if amount:
                    bundle[key] = bundle.get(key, 0.0) + amount
        return bundle

    def node_ids(self) -> list[str]:
        """The Ray node each worker was placed on (Ray only), in rank order."""
        from ray.util.placement_group import placement_group_table

        bundles = placement_group_table(self._pg)["bundles_to_node_id"]
        return [bundles[i] for i in range(len(self.workers))]

    def _start_actor(self, rank: int) -> Any:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return ray.remote(self._cls).options(
            num_cpus=self._resources.cpus_per_worker,
            num_gpus=self._resources.gpus_per_worker,
            resources=dict(self._resources.custom_resources) or None,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=rank),
        ).remote(*self._init_args(rank))

    def restart(self, rank: int) -> None:
        """Replace worker `rank` (dead or not) by a fresh one in the same placement slot (Ray only)."""
        if self.runtime != "ray":
            raise RuntimeError(f"{self.name(rank)}: workers can be restarted only with trainer.runtime=ray")
        import ray

        try:
            ray.kill(self.workers[rank], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.workers[rank] = self._start_actor(rank)

    def __len__(self) -> int:
        return len(self.workers)

    def name(self, rank: int) -> str:
        return f"{self.role}[{rank}]"

    # ---- calling ------------------------------------------------------------------------------
    def submit(self, method: str, *args: Any, ranks: Sequence[int] | None = None) -> Pending:
        """Start `method(*args)` on `ranks` (default: all) without waiting."""
        ranks = list(range(len(self))) if ranks is None else list(ranks)
        return self.submit_each(method, [args] * len(ranks), ranks)

    def submit_each(self, method: str, args: Sequence[tuple], ranks: Sequence[int] | None = None) -> Pending:
        """Start `method(*args[k])` on rank `ranks[k]` (default ranks: 0..len(args)-1)."""
        ranks = list(range(len(args))) if ranks is None else list(ranks)
        if self.runtime == "ray":
            handles = [getattr(self.workers[r], method).remote(*a) for r, a in zip(ranks, args)]
        else:
            handles = [self._threads[r].submit(getattr(self.workers[r], method), *a) for r, a in zip(ranks, args)]
        return Pending(self, method, ranks, handles)

    def call(self, method: str, *args: Any, ranks: Sequence[int] | None = None) -> list[Any]:
        """Run `method(*args)` on `ranks` (default: all) and return their results in rank order."""
        return self._wait(self.submit(method, *args, ranks=ranks))

    def call_each(self, method: str, args: Sequence[tuple]) -> list[Any]:
        """Run `method(*args[r])` on each rank r and return the results in rank order."""
        return self._wait(self.submit_each(method, args))

    def _wait(self, pending: Pending) -> list[Any]:
        return wait_all([pending], self.timeout_s)[0]

    def dead_ranks(self, probe_s: float = 10.0) -> list[int]:
        """Ranks whose worker process is gone (Ray only): a trivial call to each fails as dead
        within `probe_s`. A busy worker does not answer in time and counts as alive."""
        if self.runtime != "ray":
            return []
        import ray

        probes = [w.__ray_ready__.remote() for w in self.workers]
        ray.wait(probes, num_returns=len(probes), timeout=probe_s)
        return [r for r, ref in enumerate(probes) if _done(ref) and _is_death(_error(ref))]

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
            if self.runtime == "ray":
                import ray
                from ray.util.placement_group import remove_placement_group

                for w in self.workers:
                    ray.kill(w)
                if self._owns_pg:
                    remove_placement_group(self._pg)
            else:
                for t in self._threads:
                    t.shutdown(wait=False, cancel_futures=True)
        if problems:
            raise problems[0]


def wait_all(pendings: Sequence[Pending], timeout_s: float) -> list[list[Any]]:
    """Wait for every call in `pendings` (possibly of several groups) for at most `timeout_s`.

    Raises WorkerTimeout naming each worker still busy, or WorkerError naming the first worker
    that raised. Waiting on all together lets collectives between groups (the weight sync) run.
    """
    deadline = time.monotonic() + timeout_s
    slots = [(p, k) for p in pendings for k in range(len(p.handles))]
    while True:
        busy = [p.handles[k] for p, k in slots if not _done(p.handles[k])]
        failed = [(p, k) for p, k in slots if _done(p.handles[k]) and _error(p.handles[k]) is not None]
        if failed:  # the worker that raised is the root cause; peers waiting on it would only time out
            failed.sort(key=lambda pk: not _is_death(_error(pk[0].handles[pk[1]])))  # a death explains the rest
            p, k = failed[0]
            e = _error(p.handles[k])
            name = f"{p.group.name(p.ranks[k])}.{p.method}"
            if _is_death(e):
                raise WorkerDied(f"{name}: the worker died ({type(e).__name__}: {e})", p.group.role, p.ranks[k]) from e
            raise WorkerError(f"{name} failed: {e}") from e
        left = deadline - time.monotonic()
        if not busy or left <= 0:
            break
        _wait_any(busy, min(left, 1.0))
    stuck = [f"{p.group.name(p.ranks[k])}.{p.method}" for p, k in slots if not _done(p.handles[k])]
    if stuck:
        raise WorkerTimeout(
            f"{', '.join(stuck)} did not finish within {timeout_s:.0f} s (trainer.worker_timeout_s); "
            f"the worker may be hung or dead"
        )
    return [[_result(h) for h in p.handles] for p in pendings]


def _wait_any(handles: list[Any], timeout_s: float) -> None:
    """Return when one of `handles` finishes or after `timeout_s`."""
    futures = [h for h in handles if isinstance(h, cf.Future)]
    if futures:
        cf.wait(futures, timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
    else:
        import ray

        ray.wait(handles, num_returns=1, timeout=timeout_s)


def _done(handle: Any) -> bool:
    if isinstance(handle, cf.Future):
        return handle.done()
    import ray

    ready, _ = ray.wait([handle], timeout=0)
    return bool(ready)


def _error(handle: Any) -> BaseException | None:
    """The exception a finished call raised, or None."""
    try:
        _result(handle)
    except Exception as e:  # noqa: BLE001 - returned to the caller to re-raise with a name
        return e
    return None


def _is_death(error: BaseException | None) -> bool:
    """Whether a Ray call failed because its actor process is gone (not because it raised)."""
    return error is not None and any(c.__name__ == "RayActorError" for c in type(error).__mro__)


def _result(handle: Any) -> Any:
    if isinstance(handle, cf.Future):
        return handle.result()
    import ray

    return ray.get(handle)
