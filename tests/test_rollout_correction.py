"""Rollout correction (algorithm.rollout_correction): importance weights from the engine's
policy to the learner's, every mode by hand; `auto`; the clamped log-ratio that keeps extreme
ratios finite; and the learner using them (weights multiply the loss, metrics reported)."""
import math

import pytest
import torch

from parkrl.algorithms import KL_ESTIMATORS, POLICY_LOSSES, resolve_mode, rollout_correction, rollout_kl
from parkrl.config import AlgorithmConfig, ConfigError, validate
from parkrl.config import Config as FullConfig

# Two sequences; the last token of the first is padding (mask 0) with a huge log-ratio that must not count.
OLD = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-1.0, -1.0, -1.0, -1.0]])
ROLLOUT = torch.tensor([[-1.5, -1.0, -0.5, -30.0], [-1.2, -1.2, -1.2, -1.2]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
CFG = AlgorithmConfig(rollout_is_cap=1.5, rollout_is_low=0.5, rollout_is_high=1.6)


def test_off_is_all_ones():
    fix = rollout_correction(OLD, ROLLOUT, MASK, "off", CFG)
    assert fix.weights.tolist() == [[1.0] * 4] * 2 and fix.capped.sum() == 0 and fix.masked.sum() == 0


def test_tis_truncates_each_token_ratio_at_the_cap():
    fix = rollout_correction(OLD, ROLLOUT, MASK, "tis", CFG)
    # row 0: exp(0.5) = 1.649 -> capped at 1.5; exp(-1) = 0.368; exp(0) = 1; padding -> 1
    # row 1: exp(0.2) = 1.2214 on every token
    assert fix.weights[0].tolist() == pytest.approx([1.5, math.exp(-1), 1.0, 1.0], rel=1e-5)
    assert fix.weights[1].tolist() == pytest.approx([math.exp(0.2)] * 4, rel=1e-5)
    assert fix.capped.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0] * 4]
    assert not fix.weights.requires_grad


def test_seq_tis_uses_the_product_of_the_sequence_ratios():
    fix = rollout_correction(OLD, ROLLOUT, MASK, "seq_tis", CFG)
    # row 0: sum of log-ratios 0.5 - 1 + 0 = -0.5 -> exp(-0.5) = 0.6065 on its 3 tokens, 1 on padding
    # row 1: 4 * 0.2 = 0.8 -> exp(0.8) = 2.2255 > 1.5 -> 1.5, capped on all 4 tokens
    assert fix.weights[0].tolist() == pytest.approx([math.exp(-0.5)] * 3 + [1.0], rel=1e-5)
    assert fix.weights[1].tolist() == pytest.approx([1.5] * 4, rel=1e-5)
    assert fix.capped.tolist() == [[0.0] * 4, [1.0] * 4]


def test_mask_zeroes_tokens_outside_the_band_and_keeps_the_ratio_inside():
    fix = rollout_correction(OLD, ROLLOUT, MASK, "mask", CFG)
    # row 0: 1.649 > 1.6 -> 0 (masked); 0.368 < 0.5 -> 0 (masked); 1.0 kept; padding 1
    assert fix.weights[0].tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0], abs=1e-6)
    assert fix.weights[1].tolist() == pytest.approx([math.exp(0.2)] * 4, rel=1e-5)
    assert fix.masked.tolist() == [[1.0, 1.0, 0.0, 0.0], [0.0] * 4]
    assert fix.capped.sum() == 0


def test_seq_mask_uses_the_geometric_mean_ratio_of_the_sequence():
    fix = rollout_correction(OLD, ROLLOUT, MASK, "seq_mask", CFG)
    # row 0: mean log-ratio -0.5 / 3 -> g = 0.8465 in [0.5, 1.6]: every token weighs g
    # row 1: mean 0.2 -> g = 1.2214, kept
    assert fix.weights[0].tolist() == pytest.approx([math.exp(-0.5 / 3)] * 3 + [1.0], rel=1e-5)
    assert fix.weights[1].tolist() == pytest.approx([math.exp(0.2)] * 4, rel=1e-5)
    narrow = AlgorithmConfig(rollout_is_low=0.9, rollout_is_high=1.1)
    fix = rollout_correction(OLD, ROLLOUT, MASK, "seq_mask", narrow)
    assert fix.weights.tolist() == [[0.0, 0.0, 0.0, 1.0], [0.0] * 4]  # both sequences outside: dropped whole
    assert fix.masked.tolist() == [[1.0, 1.0, 1.0, 0.0], [1.0] * 4]


def test_rollout_kl_is_k3_with_the_engine_as_sampler():
    kl = rollout_kl(OLD, ROLLOUT)
    r = math.exp(0.5)  # row 0 token 0: pi_old / pi_rollout
    assert kl[0, 0].item() == pytest.approx(r - 1 - 0.5, rel=1e-5)
    assert kl[1, 0].item() == pytest.approx(math.exp(0.2) - 1 - 0.2, rel=1e-5)
    assert (kl >= 0).all() and torch.isfinite(kl).all()  # padding's log-ratio 30 clamped at 20
    assert rollout_kl(OLD, OLD).abs().max() == 0  # the same policy: 0


def test_auto_is_tis_for_bf16_or_one_step_off_and_off_for_fp32():
    assert resolve_mode("auto", "float32", "float32", one_step_off=False) == "off"
    assert resolve_mode("auto", "torch.float32", "float32", one_step_off=True) == "tis"
    assert resolve_mode("auto", "torch.bfloat16", "bfloat16", one_step_off=False) == "tis"
    assert resolve_mode("auto", "float32", "bfloat16", one_step_off=False) == "tis"  # different precision
    assert resolve_mode("seq_mask", "bfloat16", "bfloat16", one_step_off=False) == "seq_mask"  # explicit wins


def test_extreme_ratios_give_finite_losses_and_gradients():
    """A token the learner now gives logprob -1 but the old policy gave -200 (or the reverse):
    without the clamp exp(199) is inf and the loss or its gradient NaN."""
    old = torch.tensor([[-200.0, -1.0], [-1.0, -1.0]])
    for name in ("ppo_clip", "gspo"):
        logprobs = torch.tensor([[-1.0, -200.0], [-1.0, -1.0]], requires_grad=True)
        adv = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        cfg = AlgorithmConfig(dual_clip_c=3.0)
        out = POLICY_LOSSES.get(name)(logprobs, old, adv, torch.ones(2, 2), cfg)
        out.loss.sum().backward()
        assert torch.isfinite(out.loss).all() and torch.isfinite(logprobs.grad).all(), name
        assert out.ratio.max() <= math.exp(20) * 1.0001
    k3 = KL_ESTIMATORS.get("k3")(torch.tensor([-1.0, -200.0]), torch.tensor([-200.0, -1.0]))
    assert torch.isfinite(k3).all() and k3[1].item() == pytest.approx(math.exp(20) - 21, rel=1e-5)


def test_config_checks_the_correction_keys():
    for overrides, key in (({"rollout_correction": "truncated"}, "algorithm.rollout_correction='truncated'"),
                           ({"rollout_is_cap": 0.5}, "algorithm.rollout_is_cap=0.5"),
                           ({"rollout_is_low": 1.2}, "algorithm.rollout_is_low=1.2"),
                           ({"rollout_is_high": 0.9}, "algorithm.rollout_is_high=0.9")):
        cfg = FullConfig()
        for k, v in overrides.items():
            setattr(cfg.algorithm, k, v)
        with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace("'", "'")):
            validate(cfg)
