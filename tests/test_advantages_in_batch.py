"""Advantages on a real batch: KL in the reward, and GAE's outcome on the last trained token."""
import pytest
import torch

from parkrl.algorithms import ADVANTAGES
from parkrl.batch import TrajectoryBatch
from parkrl.config import AlgorithmConfig
from parkrl.step import add_advantages


def batch(lengths, rewards, logprobs=None) -> TrajectoryBatch:
    n = len(lengths)
    lps = logprobs or [[-1.0] * L for L in lengths]
    b = TrajectoryBatch([[1]] * n, [[5] * L for L in lengths], [[1] * L for L in lengths], lps,
                        [0] * n, [{}] * n, ["stop"] * n)
    b.add("rewards", torch.tensor(rewards))
    return b


def test_kl_in_reward_subtracts_the_summed_per_token_kl():
    b = batch([2, 3], [1.0, 0.0], logprobs=[[-1.0, -1.0], [-2.0, -2.0, -2.0]])
    b.add("ref_logprobs", [[-1.5, -1.0], [-1.0, -1.0, -1.0]])  # k1 per token: [0.5, 0], [-1, -1, -1]
    a = AlgorithmConfig(kl_coef=0.1, kl_in="reward", kl_estimator="k1", advantage="drgrpo")
    metrics = add_advantages(b, ADVANTAGES.get("drgrpo"), a)
    shaped = torch.tensor([1.0 - 0.1 * 0.5, 0.0 + 0.1 * 3.0])
    assert b["advantages"].tolist() == pytest.approx((shaped - shaped.mean()).tolist(), abs=1e-6)
    assert metrics["kl/ref"] == pytest.approx((0.5 - 3.0) / 5)


def test_gae_puts_the_outcome_on_the_last_trained_token():
    b = batch([3, 1], [1.0, 2.0])
    b.add("values", [[0.0, 0.0, 0.0], [0.5]])
    add_advantages(b, ADVANTAGES.get("gae"), AlgorithmConfig(advantage="gae", gamma=1.0, lam=1.0))
    assert b["advantages"] == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([1.5])]
    assert b["returns"] == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([2.0])]
