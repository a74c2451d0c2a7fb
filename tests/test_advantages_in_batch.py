"""Advantages on a real batch: KL in the reward, and GAE's outcome on the last trained token."""
import pytest
import torch

from parkrl.algorithms import ADVANTAGES
from parkrl.batch import TrajectoryBatch
from parkrl.config import AlgorithmConfig
from parkrl.step import add_advantages


def batch(lengths, rewards, logprobs=None, loss_mask=None) -> TrajectoryBatch:
    n = len(lengths)
    lps = logprobs or [[-1.0] * L for L in lengths]
    masks = loss_mask or [[1] * L for L in lengths]
    b = TrajectoryBatch.from_lists([[1]] * n, [[5] * L for L in lengths], masks, lps, [0] * n, [{}] * n, ["stop"] * n)
    b.add("rewards", torch.tensor(rewards))
    return b


def test_kl_in_reward_subtracts_the_summed_per_token_kl():
    b = batch([2, 3], [1.0, 0.0], logprobs=[[-1.0, -1.0], [-2.0, -2.0, -2.0]])
    b.add("ref_logprobs", b.padded([[-1.5, -1.0], [-1.0, -1.0, -1.0]]))  # k1 per token: [0.5, 0], [-1, -1, -1]
    a = AlgorithmConfig(kl_coef=0.1, kl_in="reward", kl_estimator="k1", advantage="drgrpo")
    metrics = add_advantages(b, a)
    shaped = torch.tensor([1.0 - 0.1 * 0.5, 0.0 + 0.1 * 3.0])
    assert b["advantages"].tolist() == pytest.approx((shaped - shaped.mean()).tolist(), abs=1e-6)
    assert metrics["kl/ref"] == pytest.approx((0.5 - 3.0) / 5)


def test_gae_puts_the_outcome_on_the_last_trained_token():
    b = batch([3, 1], [1.0, 2.0])
    b.add("values", b.padded([[0.0, 0.0, 0.0], [0.5]]))
    add_advantages(b, AlgorithmConfig(advantage="gae", gamma=1.0, lam=1.0, whiten_advantages=False))
    assert b["advantages"].tolist() == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([1.5, 0.0, 0.0])]  # 0 on padding
    assert b["returns"].tolist() == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([2.0, 0.0, 0.0])]


def test_gae_skips_environment_tokens_and_charges_kl_per_trained_token():
    """Multi-turn: GAE runs over the trained tokens only (an environment token between turns is
    not the end of the episode); KL in the reward is charged on trained tokens only."""
    b = batch([4, 2], [1.0, 0.0], logprobs=[[-1.0] * 4, [-1.0] * 2], loss_mask=[[1, 0, 0, 1], [0, 0]])
    b.add("ref_logprobs", b.padded([[-1.5, -9.0, -9.0, -0.5], [-9.0, -9.0]]))  # k1: 0.5 and -0.5 on the trained ones
    b.add("values", b.padded([[0.25, 7.0, 7.0, 0.5], [7.0, 7.0]]))
    a = AlgorithmConfig(advantage="gae", gamma=1.0, lam=1.0, kl_coef=0.1, kl_in="reward", kl_estimator="k1",
                        whiten_advantages=False)
    metrics = add_advantages(b, a)
    # trained tokens of row 0: rewards [-0.05, 1 + 0.05], values [0.25, 0.5] -> A = returns - V
    assert b["advantages"].tolist() == [pytest.approx([0.75, 0.0, 0.0, 0.55]), [0.0] * 4]
    assert b["returns"].tolist() == [pytest.approx([1.0, 0.0, 0.0, 1.05]), [0.0] * 4]
    assert metrics["kl/ref"] == pytest.approx(0.0)


def test_gae_advantages_are_whitened_over_trained_tokens_by_default():
    """verl/OpenRLHF whiten GAE advantages over the batch's trained tokens; returns keep their scale."""
    b = batch([3, 1], [1.0, 2.0])
    b.add("values", b.padded([[0.0, 0.0, 0.0], [0.5]]))
    add_advantages(b, AlgorithmConfig(advantage="gae", gamma=1.0, lam=1.0))  # whiten_advantages=None: on for gae
    raw = torch.tensor([1.0, 1.0, 1.0, 1.5])  # the trained tokens' GAE (test above)
    white = (raw - raw.mean()) / (raw.std() + 1e-6)  # mean 1.125, unbiased std 0.25
    assert b["advantages"].tolist() == [pytest.approx(white[:3].tolist(), abs=1e-5),
                                        pytest.approx([white[3].item(), 0.0, 0.0], abs=1e-5)]
    assert white.tolist() == pytest.approx([-0.5, -0.5, -0.5, 1.5], abs=1e-4)
    assert b["returns"].tolist() == [pytest.approx([1.0, 1.0, 1.0]), pytest.approx([2.0, 0.0, 0.0])]


def test_outcome_advantages_are_whitened_only_when_asked():
    b = batch([2, 1, 1], [1.0, 0.0, 0.0])
    add_advantages(b, AlgorithmConfig(advantage="drgrpo"))  # one group: 1 - 1/3, -1/3, -1/3; not whitened
    assert b["advantages"].tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3], abs=1e-6)
    b = batch([2, 1, 1], [1.0, 0.0, 0.0])
    add_advantages(b, AlgorithmConfig(advantage="drgrpo", whiten_advantages=True))
    # over samples: mean 0, unbiased std sqrt((4/9 + 1/9 + 1/9) / 2) = 1/sqrt(3)
    assert b["advantages"].tolist() == pytest.approx([2 / 3 * 3 ** 0.5, -(3 ** 0.5) / 3, -(3 ** 0.5) / 3], abs=1e-5)


def test_estimator_level_is_declared_at_registration():
    assert ADVANTAGES.level("gae") == "token" and ADVANTAGES.uses_critic("gae")
    assert ADVANTAGES.level("grpo") == "outcome" and not ADVANTAGES.uses_critic("grpo")
    with pytest.raises(ValueError, match="level"):
        ADVANTAGES.register("test_only_bad_level", level="sample")
    with pytest.raises(KeyError, match="registered"):
        ADVANTAGES.level("no_such_estimator")

    @ADVANTAGES.register("test_only_token_level", level="token")
    def mine(token_rewards, values, mask, cfg):
        return token_rewards * 0 + 2.0 * mask, token_rewards * 0 + 3.0 * mask

    b = batch([2, 1], [1.0, 0.0])
    b.add("values", b.padded([[0.0, 0.0], [0.0]]))
    add_advantages(b, AlgorithmConfig(advantage="test_only_token_level", whiten_advantages=False))
    assert ADVANTAGES.uses_critic("test_only_token_level")
    assert b["advantages"].tolist() == [[2.0, 2.0], [2.0, 0.0]] and b["returns"].tolist() == [[3.0, 3.0], [3.0, 0.0]]
