"""The bucketed weight broadcast over a real gloo group between processes, and its timeout; the
NCCL group's timeout, set-up errors and rank layout, and the GPU pairing of CUDA IPC handles."""
import multiprocessing as mp
import time
import types

import pytest
import torch

from parkrl.sync import TensorMeta, free_port, init_sync_group, metas_of, plan_buckets, receive_tensors, send_tensors
from parkrl.sync.process_group import NcclSyncGroup, NcclWork, close_sync_group, sync_rank, sync_world_size, wait


def test_plan_buckets_respects_size_and_dtype():
    metas = [TensorMeta("a", "float32", (10,)), TensorMeta("b", "float32", (10,)), TensorMeta("c", "float32", (30,)),
             TensorMeta("d", "bfloat16", (4,)), TensorMeta("e", "float32", (1,))]
    assert plan_buckets(metas, bucket_bytes=80) == [[0, 1], [2], [3], [4]]
    assert plan_buckets(metas, bucket_bytes=10_000) == [[0, 1, 2], [3], [4]]
    assert [i for b in plan_buckets(metas, 1) for i in b] == list(range(5))


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w1": torch.randn(3, 5, generator=g), "b1": torch.randn(7, generator=g),
            "half": torch.randn(6, generator=g).to(torch.bfloat16), "big": torch.randn(100, 10, generator=g)}


def _receiver(port: int, rank: int, wire: list, queue) -> None:
    group = init_sync_group("127.0.0.1", port, rank, 3, "gloo", timeout_s=30)
    metas = [TensorMeta.from_wire(w) for w in wire]
    got = {n: t.clone() for n, t in receive_tensors(group, metas, 30, bucket_bytes=256)}
    queue.put({n: (str(t.dtype), t.float().tolist()) for n, t in got.items()})


def test_broadcast_delivers_every_tensor_to_every_receiver():
    state = _state(0)
    state["tied"] = state["b1"]  # a tied weight: sent once, received under both names
    metas = metas_of(state.items(), None, aliases={"tied": "b1"})  # each keeps its dtype: fp32 and bf16 buckets
    wire = [m.to_wire() for m in metas]
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_receiver, args=(port, r, wire, queue)) for r in (1, 2)]
    for p in procs:
        p.start()
    group = init_sync_group("127.0.0.1", port, 0, 3, "gloo", timeout_s=30)
    taken = []

    def one_at_a_time():  # as a learner gathers them: each only when its bucket goes
        for m in metas:
            taken.append(m.name)
            yield None if m.alias_of else state[m.name]

    sent = send_tensors(group, one_at_a_time(), metas, 30, bucket_bytes=256)
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sent == sum(t.numel() * t.element_size() for n, t in state.items() if n != "tied")
    assert taken == [m.name for m in metas]  # the generator ran to its end, the alias included
    for got in results:
        assert set(got) == set(state)
        for name, t in state.items():
            dtype, values = got[name]
            assert dtype == str(t.dtype)
            assert torch.equal(torch.tensor(values), t.float())


def test_fewer_tensors_than_metas_is_an_error_not_a_short_sync():
    metas = metas_of(_state(0).items(), None)
    with pytest.raises(ValueError, match=f"fewer tensors than the {len(metas)} metas"):
        send_tensors(None, [], metas, 30)


def test_tied_parameters_are_found_under_every_name():
    from parkrl.sync import tied_names

    model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)})
    assert tied_names(model) == {}
    model["head"].weight = model["embed"].weight
    assert tied_names(model) == {"head.weight": "embed.weight"}
    meta = metas_of([("head.weight", model["head"].weight)], None, {"head.weight": "embed.weight"})[0]
    assert TensorMeta.from_wire(meta.to_wire()) == meta and meta.alias_of == "embed.weight"


def test_bf16_transfer_casts_on_the_wire():
    metas = metas_of([("x", torch.ones(4))], torch.bfloat16)
    assert metas[0].dtype == "bfloat16" and metas[0].nbytes == 8


def test_missing_peer_times_out_instead_of_hanging():
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        init_sync_group("127.0.0.1", free_port(), 0, 2, "gloo", timeout_s=3)
    assert time.monotonic() - t0 < 30
    assert "timeout" in str(e.value).lower() or "timed out" in str(e.value).lower()


def test_only_the_rotary_reload_warning_is_dropped():
    import logging

    from parkrl.sync.vllm_extension import _ROTARY_FILTER

    def record(*args):
        return logging.LogRecord("vllm", logging.WARNING, __file__, 1, "%s: Failed to load weights", args, None)

    assert not _ROTARY_FILTER.filter(record("RotaryEmbedding"))
    assert _ROTARY_FILTER.filter(record("QKVParallelLinear"))  # a real weight that failed: still shown


# ---- the NCCL sync group's logic that runs without CUDA -------------------------------------
class _NeverDone:
    def query(self) -> bool:
        return False


class _DoneAfter:
    def __init__(self, polls: int) -> None:
        self.polls = polls

    def query(self) -> bool:
        self.polls -= 1
        return self.polls < 0


class _FakeNccl(NcclSyncGroup):
    """An NcclSyncGroup without CUDA: records what it broadcasts; each broadcast ends after 2 polls."""

    def __init__(self) -> None:
        self.name, self.sent, self.aborted = "weight-sync group (nccl, rank 1 of 3)", [], 0
        self.comm = types.SimpleNamespace(disabled=False)

    def broadcast_async(self, tensor: torch.Tensor) -> NcclWork:
        self.sent.append(tensor)
        return NcclWork(_DoneAfter(2), self)

    def abort(self) -> None:
        self.aborted += 1


def test_nccl_broadcast_that_never_finishes_times_out_naming_the_group_and_aborts_it():
    group = _FakeNccl()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"weight-sync group \(nccl, rank 1 of 3\): broadcast did not finish within 1 s"):
        wait(NcclWork(_NeverDone(), group), 1.0)
    assert 1.0 <= time.monotonic() - t0 < 2.0
    assert group.aborted == 1  # the stuck broadcast ends; the fleet re-joins a fresh group


def test_buckets_travel_over_an_nccl_group_through_the_same_interface():
    group = _FakeNccl()
    state = _state(0)
    metas = metas_of(state.items(), None)
    sent = send_tensors(group, [state[m.name] for m in metas], metas, 5, bucket_bytes=256)
    assert sent == sum(t.numel() * t.element_size() for t in state.values())
    assert torch.equal(torch.cat([t.float() for t in group.sent]), torch.cat([state[m.name].reshape(-1).float() for m in metas]))
    assert group.aborted == 0
    with pytest.raises(ValueError, match="unknown sync backend 'mpi'"):
        init_sync_group("127.0.0.1", free_port(), 0, 1, "mpi", 5)


def test_a_replaced_nccl_group_is_aborted_and_gloo_needs_nothing():
    """Re-joining after an engine restart first lets go of the old communicator (GPU buffers)."""
    group = _FakeNccl()
    close_sync_group(group)
    assert group.aborted == 1
    group.comm.disabled = True  # already aborted by a failed broadcast: not again
    close_sync_group(group)
    assert group.aborted == 1
    close_sync_group(None)  # the first join


@pytest.mark.parametrize("failure", ["barrier", "no_nccl"])
def test_nccl_group_setup_fails_clearly(monkeypatch, failure):
    from types import SimpleNamespace

    from vllm.distributed import utils
    from vllm.distributed.device_communicators import pynccl

    class PG:
        def barrier(self, timeout: float) -> None:
            if failure == "barrier":
                raise RuntimeError(f"Barrier timed out after {timeout:.2f} seconds")

    monkeypatch.setattr(utils.StatelessProcessGroup, "create", staticmethod(lambda **kw: PG()))
    # vLLM turns the communicator off, quietly, where the NCCL library does not load.
    monkeypatch.setattr(pynccl, "PyNcclCommunicator", lambda pg, device: SimpleNamespace(disabled=True))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    expected = {"barrier": r"rank 2 of 3\): not every rank joined at 127.0.0.1:1 within 5 s",
                "no_nccl": r"rank 2 of 3\): vLLM could not load the NCCL library"}[failure]
    with pytest.raises((TimeoutError, RuntimeError), match=expected):
        init_sync_group("127.0.0.1", 1, 2, 3, "nccl", 5)


def test_sync_ranks_of_tensor_parallel_engines():
    # 2 engines of 2 TP ranks: learner 0, engine 0's workers 1 and 2, engine 1's 3 and 4.
    assert [sync_rank(e, 2, k) for e in (0, 1) for k in (0, 1)] == [1, 2, 3, 4]
    assert sync_world_size(2, 2) == 5
    assert [sync_rank(e, 1) for e in range(3)] == [1, 2, 3] and sync_world_size(3, 1) == 4  # TP 1: one rank each
    assert sync_rank(1, 4) + 3 == sync_rank(1, 4, 3) == 8  # a worker's rank: its engine's first + its tp_rank
    with pytest.raises(ValueError, match="tensor-parallel rank 2 outside an engine of 2 ranks"):
        sync_rank(0, 2, 2)


def test_ipc_handles_go_to_the_engine_on_the_same_gpu(monkeypatch):
    import pickle

    from parkrl.sync import ipc

    assert ipc.pair_by_gpu(["GPU-a", "GPU-b"], ["GPU-b", "GPU-a"]) == [1, 0]  # not by rank index
    assert ipc.pair_by_gpu(["GPU-a", "GPU-b"], ["GPU-a", "GPU-b"]) == [0, 1]
    with pytest.raises(RuntimeError, match=r"no learner rank shares a GPU with rollout\[1\] on GPU-c \(shared from: "
                                           r"learner\[0\] on GPU-a, learner\[1\] on GPU-b\)"):
        ipc.pair_by_gpu(["GPU-a", "GPU-b"], ["GPU-a", "GPU-c"])
    handles = pickle.dumps({"gpu": "GPU-a", "tensors": []})
    assert ipc.shared_gpu(handles) == "GPU-a"
    monkeypatch.setattr(ipc, "gpu_uuid", lambda index: "GPU-b")
    with pytest.raises(RuntimeError, match="handles from GPU GPU-a sent to an engine on GPU GPU-b"):
        ipc.open_shared(handles, 0)
