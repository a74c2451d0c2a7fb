"""TrajectoryBatch: shapes are checked, fields are write-once, sharding is a balanced partition."""
import pytest
import torch

from parkrl.batch import TrajectoryBatch


def make(n: int, lengths=None) -> TrajectoryBatch:
    lengths = lengths or [i % 5 + 1 for i in range(n)]
    return TrajectoryBatch(
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
        TrajectoryBatch([[1]], [[5, 6]], [[1]], [[0.0, 0.0]], [0], [{}], ["stop"])


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
    assert s.response_ids == [b.response_ids[4], b.response_ids[1]]


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
