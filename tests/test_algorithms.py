"""Advantage estimators, the PPO-clip loss, aggregation and KL estimators against hand-computed values."""
import math

import pytest
import torch

from parkrl.algorithms import ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, LossNorm, Registry
from parkrl.config import AlgorithmConfig

grpo = ADVANTAGES.get("grpo")
ppo_clip = POLICY_LOSSES.get("ppo_clip")
token_mean = LOSS_AGGREGATIONS.get("token-mean")
CFG = AlgorithmConfig()


def ones_like_mask(x: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(x, dtype=torch.float32)


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
    adv = ADVANTAGES.get("drgrpo")(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 0]), CFG)
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_grpo_advantages_sum_to_zero_per_group():
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(40, generator=g)
    groups = torch.arange(40) % 5
    for name in ("grpo", "drgrpo", "rloo", "reinforce_pp_baseline"):
        adv = ADVANTAGES.get(name)(rewards, groups, CFG)
        for k in range(5):
            assert adv[groups == k].sum().item() == pytest.approx(0.0, abs=1e-5)


def test_ppo_clip_ratio_one_is_unclipped_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[2.0, -3.0]])
    out = ppo_clip(logp, logp.detach(), adv, ones_like_mask(adv), CFG)
    assert out.loss[0].tolist() == pytest.approx([-2.0, 3.0])
    assert out.clipped.sum().item() == 0
    out.loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-2.0, 3.0])  # d(-A * r)/dlogp = -A at r = 1


def test_ppo_clip_separate_low_and_high():
    cfg = AlgorithmConfig(clip_low=0.2, clip_high=0.28)
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    out = ppo_clip(ratios.log(), old, adv, ones_like_mask(adv), cfg)
    # A>0, r=1.5: max(-1.5, -1.28) = -1.28 (clipped at 1+0.28)
    # A<0, r=1.5: max(1.5, 1.28) = 1.5 (unclipped, pessimistic)
    # A>0, r=0.5: max(-0.5, -0.8) = -0.5 (unclipped)
    # A<0, r=0.5: max(0.5, 0.8) = 0.8 (clipped at 1-0.2)
    assert out.loss[0].tolist() == pytest.approx([-1.28, 1.5, -0.5, 0.8])
    assert out.clipped.tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_token_mean_uses_given_token_count_and_mask():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert token_mean(values, mask, LossNorm(3, 2, 8)).item() == pytest.approx((1 + 2 + 4) / 3)
    assert token_mean(values, mask, LossNorm(10, 2, 8)).item() == pytest.approx((1 + 2 + 4) / 10)


def test_sequence_level_aggregations_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # per-sample means 1.5 and 4.0, over 4 samples in the whole mini-batch
    assert LOSS_AGGREGATIONS.get("seq-mean-token-mean")(values, mask, LossNorm(3, 4, 8)).item() == pytest.approx(5.5 / 4)
    # token sum 7 over 4 samples x 8 max new tokens
    assert LOSS_AGGREGATIONS.get("seq-mean-token-sum-norm")(values, mask, LossNorm(3, 4, 8)).item() == pytest.approx(7 / 32)
    # an all-masked sample adds nothing and does not divide by zero
    empty = torch.zeros(1, 3)
    assert LOSS_AGGREGATIONS.get("seq-mean-token-mean")(values[:1], empty, LossNorm(0, 1, 8)).item() == 0.0


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


def test_rloo_baseline_excludes_the_sample_itself():
    rewards = torch.tensor([1.0, 0.0, 0.5, 3.0, 7.0])
    groups = torch.tensor([0, 0, 0, 1, 2])
    adv = ADVANTAGES.get("rloo")(rewards, groups, CFG)
    # group 0: 1 - mean(0, .5), 0 - mean(1, .5), .5 - mean(1, 0); singletons get 0
    assert adv.tolist() == pytest.approx([0.75, -0.75, 0.0, 0.0, 0.0])


def test_reinforce_pp_whitens_over_the_batch_with_and_without_baseline():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1])
    plain = ADVANTAGES.get("reinforce_pp")(rewards, groups, CFG)
    expected = (rewards - 0.75) / rewards.std()
    assert plain.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    based = ADVANTAGES.get("reinforce_pp_baseline")(rewards, groups, CFG)
    centred = torch.tensor([0.5, -0.5, 0.0, 0.0])  # minus group means 0.5 and 1.0
    assert based.tolist() == pytest.approx((centred / centred.std()).tolist(), abs=1e-5)
    assert ADVANTAGES.get("reinforce_pp")(torch.tensor([2.0]), torch.tensor([0]), CFG).tolist() == [0.0]


def test_dual_clip_bounds_negative_advantages():
    cfg = AlgorithmConfig(clip_low=0.2, clip_high=0.2, dual_clip_c=3.0)
    ratio = torch.tensor([[5.0, 5.0, 2.0]])
    adv = torch.tensor([[-1.0, 1.0, -1.0]])
    out = ppo_clip(ratio.log(), torch.zeros(1, 3), adv, ones_like_mask(adv), cfg)
    # A<0, r=5: max(5, 1.2) = 5 -> bounded at 3; A>0, r=5: clipped at -1.2; A<0, r=2: 2 < 3 stays
    assert out.loss[0].tolist() == pytest.approx([3.0, -1.2, 2.0])
    assert out.clipped[0].tolist() == [1.0, 1.0, 0.0]


def test_gspo_uses_one_ratio_per_sequence_with_token_gradients():
    cfg = AlgorithmConfig(clip_low=0.5, clip_high=0.5)
    old = torch.zeros(2, 3)
    logp = torch.tensor([[0.1, 0.3, 9.0], [-0.2, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([[2.0] * 3, [-1.0] * 3])
    out = POLICY_LOSSES.get("gspo")(logp, old, adv, mask, cfg)
    s = [math.exp(0.2), math.exp(-0.2)]  # geometric mean of the token ratios; padding ignored
    assert out.ratio[0, :2].tolist() == pytest.approx([s[0]] * 2)
    assert out.ratio[1, 0].item() == pytest.approx(s[1])
    assert out.loss[0, 0].item() == pytest.approx(-2.0 * s[0])
    (out.loss * mask).sum().backward()
    assert logp.grad[0, :2].tolist() == pytest.approx([-2.0 * s[0]] * 2)  # s_i * grad log pi_t
    assert logp.grad[1, 0].item() == pytest.approx(1.0 * s[1])
    # a one-token sequence's GSPO ratio is the token's PPO ratio
    one = POLICY_LOSSES.get("gspo")(torch.tensor([[0.4]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), cfg)
    assert one.ratio.item() == pytest.approx(math.exp(0.4))


def test_gae_by_hand_and_lambda_one_equals_returns_minus_values():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.6, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # second sample is 2 tokens long
    gae = ADVANTAGES.get("gae")
    cfg = AlgorithmConfig(gamma=0.9, lam=0.8)
    adv, ret = gae(rewards, values, mask, cfg)
    # sample 0: deltas 0+0.9*0.2-0.1=0.08, 0+0.9*0.3-0.2=0.07, 1-0.3=0.7 (value after the end is 0)
    a2 = 0.7
    a1 = 0.07 + 0.9 * 0.8 * a2
    a0 = 0.08 + 0.9 * 0.8 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2], abs=1e-6)
    # sample 1: the padded position (value 9.0) must not leak in
    b1 = 2.0 - 0.6
    b0 = 0.5 + 0.9 * 0.6 - 0.4 + 0.9 * 0.8 * b1
    assert adv[1].tolist() == pytest.approx([b0, b1, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx((adv[0] + values[0]).tolist(), abs=1e-6)
    # lambda = gamma = 1: advantages are returns-to-go minus values
    adv1, _ = gae(rewards, values, mask, AlgorithmConfig(gamma=1.0, lam=1.0))
    to_go = torch.tensor([[1.0, 1.0, 1.0], [2.5, 2.0, 0.0]])
    assert adv1.tolist()[0] == pytest.approx((to_go[0] - values[0]).tolist(), abs=1e-6)
    assert adv1.tolist()[1][:2] == pytest.approx((to_go[1, :2] - values[1, :2]).tolist(), abs=1e-6)
    assert ADVANTAGES.level("gae") == "token" and ADVANTAGES.uses_critic("gae")  # declared when registered
