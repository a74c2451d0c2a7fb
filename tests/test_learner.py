"""The learner's gradient does not depend on how a mini-batch is cut into micro-batches, nor on
whether a micro-batch packs its shared prompts (learner.share_prompts), nor on skipping the
samples whose advantage is 0; and the tied output head is named for the sync as an alias."""
import math

import pytest
import torch
from torch.distributed.tensor import DTensor

from parkrl.batch import TrajectoryBatch
from parkrl.config import Config
from parkrl.workers.fsdp_learner import FSDPLearner


def random_batch(n: int = 8) -> TrajectoryBatch:
    g = torch.Generator().manual_seed(0)
    # groups of 4 share a prompt, as GRPO groups do (the learner packs each prompt once per micro-batch)
    distinct = [torch.randint(3, 1000, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
                for _ in range((n + 3) // 4)]
    prompts = [distinct[i // 4] for i in range(n)]
    responses = [torch.randint(3, 1000, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    masks = [[1] * len(r) for r in responses]
    masks[1][0] = 0  # an environment token inside a response
    batch = TrajectoryBatch.from_lists(prompts, responses, masks, [[-1.0] * len(r) for r in responses],
                                       [i // 4 for i in range(n)], [{}] * n, ["stop"] * n)
    batch.add("advantages", torch.randn(n, generator=g))
    return batch


def grad_norm_and_loss(model_dir: str, micro_batch_size: int, max_tokens: int = 0) -> tuple[float, float, set[str]]:
    cfg = Config()
    cfg.learner.dtype, cfg.learner.micro_batch_size, cfg.learner.grad_clip = "float32", micro_batch_size, 1e9
    cfg.learner.max_tokens_per_micro_batch = max_tokens
    cfg.algorithm.rollout_correction = "off"  # the batch's engine logprobs are placeholders (-1.0)
    learner = FSDPLearner(cfg, model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    metrics = learner.update(random_batch())
    layouts = {type(mb).__name__ for _, mb in learner._micro_batches(random_batch())}
    return metrics["learner/grad_norm"], metrics["loss/policy"], layouts


def test_micro_batch_size_does_not_change_the_gradient(tiny_model_dir):
    one_by_one = grad_norm_and_loss(tiny_model_dir, 1)  # one sample per pass: plain rows
    all_at_once = grad_norm_and_loss(tiny_model_dir, 8)  # two groups of 4: packed, each prompt once
    assert one_by_one[2] == {"PaddedBatch"} and all_at_once[2] == {"SharedPromptBatch"}
    assert one_by_one[0] > 0
    assert one_by_one[0] == pytest.approx(all_at_once[0], rel=1e-4)
    assert one_by_one[1] == pytest.approx(all_at_once[1], rel=1e-4, abs=1e-7)


def test_token_budget_micro_batches_do_not_change_the_gradient(tiny_model_dir):
    fixed = grad_norm_and_loss(tiny_model_dir, 8)
    budget = grad_norm_and_loss(tiny_model_dir, 8, max_tokens=24)  # 2-3 short samples per pass, long ones alone
    assert budget[0] == pytest.approx(fixed[0], rel=1e-4)
    assert budget[1] == pytest.approx(fixed[1], rel=1e-4, abs=1e-7)


def _update_twice(model_dir: str, batch: TrajectoryBatch, skip: bool, kl_in_loss: bool = False, weight_decay: float = 0.0,
                  grad_clip: float = 1e9):
    from parkrl.workers.learner import Learner

    cfg = Config()
    cfg.learner.dtype, cfg.learner.micro_batch_size, cfg.learner.lr, cfg.learner.grad_clip = "float32", 4, 1e-3, grad_clip
    cfg.learner.weight_decay = weight_decay
    cfg.algorithm.rollout_correction = "off"  # the batch's engine logprobs are placeholders (-1.0)
    if kl_in_loss:
        cfg.algorithm.kl_coef = 0.1
        batch.add("ref_logprobs", batch.padded([[-1.0] * n for n in batch.response_lengths.tolist()]))
    learner = FSDPLearner(cfg, model_dir, rank=0, world_size=1)
    if not skip:  # the reference: every sample computed
        learner._rows_with_gradient = lambda mini, stats: list(range(len(mini)))
    else:
        assert learner._rows_with_gradient.__func__ is Learner._rows_with_gradient
    learner.setup(*learner.free_address())
    metrics = [learner.update(batch) for _ in range(2)]
    return metrics, learner._full_state_dict()


def zero_advantage_batch(n: int = 16, zero_rows: tuple[int, ...] = (0, 1, 2, 3, 8, 9, 10, 11)) -> TrajectoryBatch:
    batch = random_batch(n)
    if zero_rows:
        batch["advantages"][list(zero_rows)] = 0.0  # groups whose samples all scored the same
    return batch


def test_zero_advantage_samples_are_skipped_without_changing_the_update(tiny_model_dir):
    skipped, w_skipped = _update_twice(tiny_model_dir, zero_advantage_batch(), skip=True)
    full, w_full = _update_twice(tiny_model_dir, zero_advantage_batch(), skip=False)
    assert [m["learner/skipped_samples"] for m in skipped] == [8, 8]
    assert [m["learner/skipped_samples"] for m in full] == [0, 0]
    assert full[0]["learner/grad_norm"] > 0
    for a, b in zip(skipped, full):
        assert a["learner/grad_norm"] == pytest.approx(b["learner/grad_norm"], rel=1e-5)
    for name, w in w_full.items():
        torch.testing.assert_close(w_skipped[name], w, rtol=0, atol=1e-6, msg=name)
    # KL in the loss gives every sample a gradient: nothing may be skipped
    with_kl, _ = _update_twice(tiny_model_dir, zero_advantage_batch(), skip=True, kl_in_loss=True)
    assert with_kl[0]["learner/skipped_samples"] == 0


def test_a_batch_without_signal_still_takes_its_optimizer_step(tiny_model_dir):
    """Every advantage 0: one row still runs, so AdamW steps (its weight decay moves the weights)
    exactly as it would have on the whole batch."""
    from transformers import AutoModelForCausalLM

    flat = tuple(range(8))
    skipped, w_skipped = _update_twice(tiny_model_dir, zero_advantage_batch(8, flat), skip=True, weight_decay=0.1)
    full, w_full = _update_twice(tiny_model_dir, zero_advantage_batch(8, flat), skip=False, weight_decay=0.1)
    assert skipped[0]["learner/skipped_samples"] == 7
    assert skipped[0]["learner/grad_norm"] == full[0]["learner/grad_norm"] == 0
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not torch.equal(w_full["model.norm.weight"], initial["model.norm.weight"])  # decay moved it
    for name, w in w_full.items():
        assert torch.equal(w_skipped[name], w), name


def test_weights_travel_in_the_dtype_the_engines_report(tiny_model_dir):
    """`auto` may resolve differently on the engines' nodes than on the learner's: the fleet asks
    the engines (EngineWorker.weight_dtype) and the learner casts to that before sending."""
    from parkrl.sync import TensorMeta

    cfg = Config()
    cfg.learner.dtype = cfg.rollout.dtype = "float32"
    learner = FSDPLearner(cfg, tiny_model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    own = [TensorMeta.from_wire(row) for row in learner.weight_metas()]
    reported = [TensorMeta.from_wire(row) for row in learner.weight_metas("bfloat16")]
    assert {m.dtype for m in own} == {"float32"} and {m.dtype for m in reported} == {"bfloat16"}
    assert [(m.name, m.shape, m.alias_of) for m in own] == [(m.name, m.shape, m.alias_of) for m in reported]
    assert sum(m.nbytes for m in reported) * 2 == sum(m.nbytes for m in own)
    sent = [t for t in learner._weights_to_send(reported) if t is not None]
    assert {t.dtype for t in sent} == {torch.float32}  # master weights: send_tensors casts each as it goes
    learner.shutdown()


def test_the_tied_head_is_named_for_the_sync_but_travels_once(tiny_model_dir):
    from parkrl.sync import TensorMeta

    cfg = Config()
    cfg.learner.dtype = cfg.rollout.dtype = "float32"
    learner = FSDPLearner(cfg, tiny_model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    metas = [TensorMeta.from_wire(row) for row in learner.weight_metas()]
    assert {m.name: m.alias_of for m in metas if m.alias_of} == {"lm_head.weight": "model.embed_tokens.weight"}
    assert len({m.name for m in metas}) == len(metas) and "model.embed_tokens.weight" in {m.name for m in metas}
    full = learner._full_state_dict()  # what the sync sends, weight by weight, without the alias
    sent = list(learner._weights_to_send(metas))
    assert [t is None for t in sent] == [bool(m.alias_of) for m in metas]
    for m, t in zip(metas, sent):
        if t is not None:
            assert torch.equal(t, full[m.name]) and not isinstance(t, DTensor), m.name


def test_a_loss_with_gradient_at_zero_advantage_opts_out_of_skipping(tiny_model_dir):
    """A policy loss with a term of its own (here a pull of the logprobs towards 0) has a gradient
    on samples whose advantage is 0: registered with needs_zero_advantage_rows=True, every
    sample is computed; without it those samples would be left out (and their term lost)."""
    from parkrl.algorithms import POLICY_LOSSES, PolicyLossOutput

    def loss_with_regulariser(logprobs, old_logprobs, advantages, mask, cfg):
        ratio = torch.exp(logprobs - old_logprobs)
        return PolicyLossOutput(-advantages * ratio + 0.01 * logprobs ** 2, torch.zeros_like(ratio), ratio)

    POLICY_LOSSES.register("test_only_regularised", needs_zero_advantage_rows=True)(loss_with_regulariser)
    POLICY_LOSSES.register("test_only_plain")(loss_with_regulariser)
    assert POLICY_LOSSES.needs_zero_advantage_rows("test_only_regularised")
    assert not POLICY_LOSSES.needs_zero_advantage_rows("test_only_plain") and not POLICY_LOSSES.needs_zero_advantage_rows("ppo_clip")
    skipped = {}
    for name in ("test_only_regularised", "test_only_plain"):
        cfg = Config()
        cfg.learner.dtype, cfg.learner.micro_batch_size, cfg.algorithm.policy_loss = "float32", 4, name
        cfg.algorithm.rollout_correction = "off"  # the batch's engine logprobs are placeholders (-1.0)
        learner = FSDPLearner(cfg, tiny_model_dir, rank=0, world_size=1)
        learner.setup(*learner.free_address())
        skipped[name] = learner.update(zero_advantage_batch(8, (0, 1, 2, 3)))["learner/skipped_samples"]
        learner.shutdown()
    assert skipped == {"test_only_regularised": 0, "test_only_plain": 4}


def _corrected_update(model_dir: str, mode: str, shift: float, epochs: int = 1) -> dict[str, float]:
    """One update on a batch whose engine logprobs are the learner's own minus `shift` per token
    (with `epochs` > 1: two mini-batches per epoch, from the batch's old logprobs)."""
    cfg = Config()
    cfg.learner.dtype, cfg.learner.grad_clip, cfg.algorithm.rollout_correction = "float32", 1e9, mode
    cfg.learner.epochs, cfg.learner.mini_batches, cfg.learner.lr = epochs, 1 if epochs == 1 else 2, 1e-3
    learner = FSDPLearner(cfg, model_dir, rank=0, world_size=1)
    learner.setup(*learner.free_address())
    assert learner.resolve_rollout_correction("float32") == mode
    batch = random_batch()
    old = learner.per_token(batch)
    batch.rollout_logprobs = old - shift * batch.loss_mask
    if epochs > 1:
        batch.add("old_logprobs", old)
    return learner.update(batch)


def test_rollout_correction_weights_the_loss_and_reports_its_metrics(tiny_model_dir):
    """On-policy with the engine's logprobs 0.1 below the learner's, every trained token's ratio
    pi_old / pi_rollout is e^0.1: `tis` scales the policy gradient by exactly that; with a
    gap of 1.0 (e^1 > cap 2) every token is capped at 2; `mask` with band [0.5, 2] drops them."""
    off = _corrected_update(tiny_model_dir, "off", 0.1)
    tis = _corrected_update(tiny_model_dir, "tis", 0.1)
    assert "rollout/is_weight_mean" not in off
    assert tis["learner/grad_norm"] == pytest.approx(off["learner/grad_norm"] * math.exp(0.1), rel=1e-4)
    assert tis["rollout/is_weight_mean"] == pytest.approx(math.exp(0.1), rel=1e-5)
    assert tis["rollout/is_weight_max"] == pytest.approx(math.exp(0.1), rel=1e-5)
    assert tis["rollout/is_capped_frac"] == 0
    for m in (off, tis):  # k3 of the learner against the engine, whatever the mode
        assert m["rollout/kl"] == pytest.approx(math.exp(0.1) - 1.1, rel=1e-3)
    capped = _corrected_update(tiny_model_dir, "tis", 1.0)
    assert capped["rollout/is_capped_frac"] == 1.0 and capped["rollout/is_weight_max"] == pytest.approx(2.0)
    assert capped["learner/grad_norm"] == pytest.approx(off["learner/grad_norm"] * 2.0, rel=1e-4)
    masked = _corrected_update(tiny_model_dir, "mask", 1.0)
    assert masked["rollout/is_masked_frac"] == 1.0 and masked["learner/grad_norm"] == 0


def test_rollout_correction_weights_stay_fixed_over_epochs_and_mini_batches(tiny_model_dir):
    """The weights compare the step's old policy with the engine's, not the moving policy: with
    2 epochs x 2 mini-batches (lr 1e-3 moves this tiny model a lot) every pass sees e^0.1."""
    m = _corrected_update(tiny_model_dir, "tis", 0.1, epochs=2)
    assert m["rollout/is_weight_mean"] == pytest.approx(math.exp(0.1), rel=1e-5)
    assert m["rollout/kl"] == pytest.approx(math.exp(0.1) - 1.1, rel=1e-3)
    assert m["policy/ratio_dev"] > 1e-4  # the policy did move between optimizer steps
