"""Advantage estimators, the PPO-clip loss, aggregation and KL estimators against hand-computed values."""
import math

import pytest
import torch

from parkrl.algorithms import ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, Registry
from parkrl.config import AlgorithmConfig

grpo = ADVANTAGES.get("grpo")
ppo_clip = POLICY_LOSSES.get("ppo_clip")
token_mean = LOSS_AGGREGATIONS.get("token-mean")


def test_grpo_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 2.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    adv = grpo(rewards, groups, AlgorithmConfig())
    std = math.sqrt(((0.5 ** 2) * 4) / 3)  # unbiased std of [1, 0, 0, 1]
    expected = [0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std, 0.0, 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-5)


def test_grpo_all_equal_group_and_singleton_give_zero():
    adv = grpo(torch.tensor([0.3, 0.3, 0.3, 1.0]), torch.tensor([5, 5, 5, 9]), AlgorithmConfig())
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_drgrpo_skips_std_division():
    adv = grpo(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 0]), AlgorithmConfig(std_normalize=False))
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_grpo_advantages_sum_to_zero_per_group():
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(40, generator=g)
    groups = torch.arange(40) % 5
    for std_normalize in (True, False):
        adv = grpo(rewards, groups, AlgorithmConfig(std_normalize=std_normalize))
        for k in range(5):
            assert adv[groups == k].sum().item() == pytest.approx(0.0, abs=1e-5)


def test_ppo_clip_ratio_one_is_unclipped_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[2.0, -3.0]])
    out = ppo_clip(logp, logp.detach(), adv, AlgorithmConfig())
    assert out.loss[0].tolist() == pytest.approx([-2.0, 3.0])
    assert out.clipped.sum().item() == 0
    out.loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-2.0, 3.0])  # d(-A * r)/dlogp = -A at r = 1


def test_ppo_clip_separate_low_and_high():
    cfg = AlgorithmConfig(clip_low=0.2, clip_high=0.28)
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    out = ppo_clip(ratios.log(), old, adv, cfg)
    # A>0, r=1.5: max(-1.5, -1.28) = -1.28 (clipped at 1+0.28)
    # A<0, r=1.5: max(1.5, 1.28) = 1.5 (unclipped, pessimistic)
    # A>0, r=0.5: max(-0.5, -0.8) = -0.5 (unclipped)
    # A<0, r=0.5: max(0.5, 0.8) = 0.8 (clipped at 1-0.2)
    assert out.loss[0].tolist() == pytest.approx([-1.28, 1.5, -0.5, 0.8])
    assert out.clipped.tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_token_mean_uses_given_token_count_and_mask():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert token_mean(values, mask, 3.0).item() == pytest.approx((1 + 2 + 4) / 3)
    assert token_mean(values, mask, 10.0).item() == pytest.approx((1 + 2 + 4) / 10)


def test_kl_estimators_by_hand():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])
    d = ref - logp  # [-0.5, 1.0]
    assert KL_ESTIMATORS.get("k1")(logp, ref).tolist() == pytest.approx([0.5, -1.0])
    assert KL_ESTIMATORS.get("k2")(logp, ref).tolist() == pytest.approx([0.125, 0.5])
    assert KL_ESTIMATORS.get("k3")(logp, ref).tolist() == pytest.approx((d.exp() - d - 1).tolist())
    assert (KL_ESTIMATORS.get("k3")(torch.randn(100), torch.randn(100)) >= 0).all()
    assert KL_ESTIMATORS.get("k3")(logp, logp).tolist() == [0.0, 0.0]


def test_user_registration_and_unknown_name():
    reg = Registry("advantage estimator", "algorithm.advantage")

    @reg.register("mine")
    def mine(rewards, group_ids, cfg):
        return rewards * 2

    assert reg.get("mine") is mine
    with pytest.raises(KeyError, match="algorithm.advantage.*registered: mine"):
        reg.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("mine")(lambda *a: None)


def test_user_estimator_in_global_registry_passes_validation():
    from parkrl.algorithms import registered_names
    from parkrl.config import Config, validate

    @ADVANTAGES.register("test_only_constant")
    def constant(rewards, group_ids, cfg):
        return torch.ones_like(rewards)

    cfg = Config()
    cfg.algorithm.advantage = "test_only_constant"
    validate(cfg, registered_names())
