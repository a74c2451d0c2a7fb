"""TrajectoryBatch: shapes are checked, fields are write-once, sharding is a balanced partition,
per-token data is padded tensors whose padding never counts."""
import pytest
import torch

from parkrl.batch import TrajectoryBatch


def make(n: int, lengths=None) -> TrajectoryBatch:
    lengths = lengths or [i % 5 + 1 for i in range(n)]
    return TrajectoryBatch.from_lists(
        prompt_ids=[[1, 2, 3]] * n,
        response_ids=[[7] * L for L in lengths],
        loss_mask=[[1] * L for L in lengths],
        rollout_logprobs=[[-0.5] * L for L in lengths],
        group_ids=[i // 2 for i in range(n)],
        samples=[{"i": i} for i in range(n)],
        finish_reasons=["stop"] * n,
    )


def test_per_token_fields_must_match_response_length():
    with pytest.raises(ValueError, match="sample 0"):
        TrajectoryBatch.from_lists([[1]], [[5, 6]], [[1]], [[0.0, 0.0]], [0], [{}], ["stop"])


def test_fields_are_write_once_and_row_checked():
    b = make(4)
    b.add("rewards", torch.zeros(4))
    with pytest.raises(KeyError, match="already written"):
        b.add("rewards", torch.ones(4))
    with pytest.raises(ValueError, match="3 rows, expected 4"):
        b.add("advantages", torch.zeros(3))


def test_select_keeps_rows_aligned_across_fields():
    b = make(6)
    b.add("rewards", torch.arange(6.0))
    s = b.select([4, 1])
    assert [x["i"] for x in s.samples] == [4, 1]
    assert s["rewards"].tolist() == [4.0, 1.0]
    assert s.response_lists() == [b.response_lists()[4], b.response_lists()[1]]


def test_shards_partition_the_batch_with_balanced_tokens():
    lengths = [1, 2, 3, 4, 5, 6, 7, 8, 30, 40, 50, 60]
    b = make(12, lengths)
    shards = b.shard_indices(4)
    assert sorted(i for s in shards for i in s) == list(range(12))
    assert all(len(s) == 3 for s in shards)
    tokens = [sum(lengths[i] for i in s) for s in shards]
    assert max(tokens) - min(tokens) <= 20  # best possible is 18; contiguous chunks differ by 140
    with pytest.raises(ValueError):
        b.shard_indices(5)


def test_concat_keeps_rows_and_fields_in_order():
    a, b = make(2), make(3)
    a.add("rewards", torch.tensor([1.0, 2.0]))
    b.add("rewards", torch.tensor([3.0, 4.0, 5.0]))
    c = TrajectoryBatch.concat([a, b])
    assert len(c) == 5 and c["rewards"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert c.samples == a.samples + b.samples
    with pytest.raises(ValueError, match="different fields"):
        TrajectoryBatch.concat([a, make(1)])


def test_lists_become_padded_tensors_once():
    b = TrajectoryBatch.from_lists([[1], [2]], [[5, 6, 7], [8]], [[1, 0, 1], [1]], [[-0.1, -0.2, -0.3], [-0.4]],
                                   [0, 0], [{}, {}], ["stop", "stop"])
    assert b.response_ids.tolist() == [[5, 6, 7], [8, 0, 0]] and b.response_lengths.tolist() == [3, 1]
    assert b.loss_mask.tolist() == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    assert b.rollout_logprobs.dtype == torch.float32  # what the learner computes in: the same float32 values
    assert b.rollout_logprobs[0].tolist() == torch.tensor([-0.1, -0.2, -0.3]).tolist()
    assert b.response_mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.num_response_tokens == 4 and b.response_lists() == [[5, 6, 7], [8]]
    with pytest.raises(TypeError, match="from_lists"):
        TrajectoryBatch([[1]], [[5]], [1], [[1]], [[0.0]], [0], [{}], ["stop"])  # type: ignore[arg-type]


def test_padding_never_counts():
    b = make(3, [2, 4, 1])
    assert b.width == 4 and int(b.loss_mask.sum()) == 7 == b.num_response_tokens
    with pytest.raises(ValueError, match="0 past each response"):  # padding may not carry values
        b.add("values", torch.ones(3, 4))
    with pytest.raises(ValueError, match="columns"):
        b.add("values", torch.zeros(3, 5))
    ok = make(2, [2, 1])
    with pytest.raises(ValueError, match="loss_mask must be 0 past"):
        TrajectoryBatch(ok.prompt_ids, ok.response_ids, ok.response_lengths, torch.ones(2, 2), ok.rollout_logprobs,
                        ok.group_ids, ok.samples, ok.finish_reasons)
    with pytest.raises(ValueError, match="one entry per response token"):
        b.padded([[1.0, 2.0], [1.0], [1.0]])
    b.add("values", b.padded([[1.0, 2.0], [3.0, 4.0, 5.0, 6.0], [7.0]]))
    assert b["values"].tolist() == [[1, 2, 0, 0], [3, 4, 5, 6], [7, 0, 0, 0]]


def test_select_cuts_to_the_longest_selected_response():
    b = make(4, [2, 5, 1, 3])
    b.add("values", b.padded([[float(t) for t in range(1, n + 1)] for n in [2, 5, 1, 3]]))
    b.add("rewards", torch.arange(4.0))
    s = b.select([3, 0])
    assert s.width == 3 and s.response_lengths.tolist() == [3, 2]
    assert s["values"].tolist() == [[1, 2, 3], [1, 2, 0]] and s["rewards"].tolist() == [3.0, 0.0]
    assert s.loss_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert s.response_ids.is_contiguous() and s["values"].is_contiguous()
    empty = b.select([])
    assert len(empty) == 0 and empty.width == 1 and empty.response_ids.shape == (0, 1)


def test_concat_pads_to_the_widest_part():
    a, b = make(2, [1, 2]), make(1, [4])
    for part in (a, b):
        part.add("values", part.padded([[1.0] * int(n) for n in part.response_lengths]))
    c = TrajectoryBatch.concat([a, b])
    assert c.width == 4 and c.response_lengths.tolist() == [1, 2, 4]
    assert c["values"].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert c.rollout_logprobs.tolist() == [[-0.5, 0, 0, 0], [-0.5, -0.5, 0, 0], [-0.5] * 4]
    assert int(c.loss_mask.sum()) == c.num_response_tokens == 7


def test_fleet_per_token_puts_each_ranks_rows_back_in_place():
    """Fleet.per_token shards the batch over the learner ranks (balanced by tokens, not
    contiguous), each rank answers [n, its longest response]; the rows land where they came from."""
    import threading

    from parkrl.workers.fleet import Fleet

    class Ranks:
        def __len__(self):
            return 3

        def call_each(self, method, args):
            assert method == "per_token"
            # a value per token that names it: row id * 1000 + token id, 0 on padding
            rows = [torch.tensor([s["i"] for s in b.samples]).unsqueeze(1) for b, _ in args]
            return [torch.where(b.response_mask, b.response_ids + 1000.0 * i, 0.0).float() for (b, _), i in zip(args, rows)]

    fleet = Fleet.__new__(Fleet)
    fleet.learner, fleet._learner_lock = Ranks(), threading.RLock()
    b = TrajectoryBatch.from_lists([[1]] * 6, [[t + 1 for t in range(n)] for n in (4, 1, 6, 2, 2, 3)],
                                   [[1] * n for n in (4, 1, 6, 2, 2, 3)], [[-0.5] * n for n in (4, 1, 6, 2, 2, 3)],
                                   [0, 0, 1, 1, 2, 2], [{"i": i} for i in range(6)], ["stop"] * 6)
    shards = b.shard_indices(3)
    assert shards != [[0, 1], [2, 3], [4, 5]]  # rows are interleaved over the ranks
    out = fleet.per_token(b, "policy")
    assert out.dtype == torch.float32 and out.shape == (6, 6)
    expected = torch.where(b.response_mask, b.response_ids + 1000.0 * torch.arange(6).unsqueeze(1), 0.0)
    assert torch.equal(out, expected)
