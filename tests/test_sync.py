"""The bucketed weight broadcast over a real gloo group between processes, and its timeout."""
import multiprocessing as mp
import time

import pytest
import torch

from parkrl.sync import TensorMeta, free_port, init_sync_group, metas_of, plan_buckets, receive_tensors, send_tensors


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
