"""Worker groups (local runtime): concurrency across workers, and errors that name the worker."""
import time

import pytest

from parkrl.config import RoleResources
from parkrl.workers import WorkerError, WorkerGroup, WorkerTimeout, wait_all


class Sleeper:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def nap(self, seconds: float) -> int:
        time.sleep(seconds)
        return self.rank

    def nap_if(self, rank: int, seconds: float) -> int:
        if self.rank == rank:
            time.sleep(seconds)
        return self.rank

    def fail(self) -> None:
        raise ValueError(f"boom from {self.rank}")

    def fail_if(self, rank: int) -> int:
        if self.rank == rank:
            raise ValueError(f"boom from {self.rank}")
        return self.rank

    def shutdown(self) -> None:
        pass


def group(n: int = 3, timeout_s: float = 5.0) -> WorkerGroup:
    return WorkerGroup("sleeper", Sleeper, RoleResources(num_workers=n), "local", timeout_s, lambda r: (r,))


def test_calls_run_concurrently_across_workers_and_return_in_rank_order():
    g = group()
    t0 = time.monotonic()
    assert g.call("nap", 0.5) == [0, 1, 2]
    assert time.monotonic() - t0 < 1.3  # three 0.5 s naps in parallel
    assert g.call_each("nap", [(0.0,), (0.0,), (0.0,)]) == [0, 1, 2]
    g.shutdown()


def test_hung_worker_is_named_within_the_timeout():
    g = group(timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout, match=r"sleeper\[1\]\.nap_if did not finish within 1 s"):
        g.call("nap_if", 1, 3.0)
    assert time.monotonic() - t0 < 2.5


def test_worker_exception_names_worker_and_method():
    g = group()
    with pytest.raises(WorkerError, match=r"sleeper\[1\]\.fail_if failed: boom from 1"):
        g.call("fail_if", 1)


def test_wait_returns_submitted_results_in_the_order_of_their_ranks():
    g = group(timeout_s=1.0)
    pending = g.submit("nap", 0.3, ranks=[2, 0])
    assert g.wait(pending) == [2, 0]
    with pytest.raises(WorkerTimeout, match=r"sleeper\[2\]\.nap_if did not finish within 1 s"):
        g.wait(g.submit_each("nap_if", [(2, 3.0), (2, 3.0)], [0, 2]))


def test_local_workers_never_count_as_dead_and_cannot_be_restarted():
    g = group(2)
    assert g.dead_ranks() == []
    with pytest.raises(RuntimeError, match=r"sleeper\[1\]: workers can be restarted only with trainer.runtime=ray"):
        g.restart(1)
    assert g.call("nap", 0.0) == [0, 1]


def test_wait_all_spans_groups():
    a, b = group(2), group(2)
    out = wait_all([a.submit("nap", 0.2), b.submit("nap", 0.2, ranks=[1])], 5.0)
    assert out == [[0, 1], [1]]


def test_a_failing_worker_is_reported_at_once_not_as_its_peers_timeout():
    a, b = group(1, timeout_s=30.0), group(1, timeout_s=30.0)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"sleeper\[0\]\.fail failed"):
        wait_all([a.submit("nap", 20.0), b.submit("fail")], 30.0)
    assert time.monotonic() - t0 < 5


class Where:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def rank_here(self) -> int:
        return self.rank

    def shutdown(self) -> None:
        pass


@pytest.mark.integration
def test_colocated_groups_share_each_bundle_and_the_host_owns_it(ray_session):
    """resources.colocate's placement: guest worker i lands in host bundle i, which reserves
    both roles' resources; the guest's shutdown leaves the host's placement group alone."""
    from ray.util.placement_group import placement_group_table

    host = WorkerGroup("host", Where, RoleResources(num_workers=2, cpus_per_worker=0.25), "ray", 60, lambda r: (r,),
                       bundle_extra=RoleResources(num_workers=2, cpus_per_worker=0.125))
    try:
        guest = WorkerGroup("guest", Where, RoleResources(num_workers=2, cpus_per_worker=0.125), "ray", 60,
                            lambda r: (r,), colocate_with=host)
        assert host.runtime.bundle == {"CPU": 0.375}  # both roles' CPUs in each bundle
        assert guest.runtime.placement_group.id == host.runtime.placement_group.id
        assert guest.call("rank_here") == [0, 1]
        guest.shutdown()
        assert placement_group_table(host.runtime.placement_group)["state"] == "CREATED"  # still the host's, and in use
        assert host.call("rank_here") == [0, 1]
    finally:
        host.shutdown()
    assert placement_group_table(host.runtime.placement_group)["state"] == "REMOVED"
