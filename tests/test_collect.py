"""Collecting a step's batch: DAPO overlong shaping and filtering, dynamic sampling's top-up loop."""
import pytest
import torch

from parkrl.batch import TrajectoryBatch
from parkrl.collect import collect_batch, overlong_shaped, split_by_signal
from parkrl.config import AlgorithmConfig, Config
from parkrl.engines import Completion
from parkrl.rewards import RewardFunction
from parkrl.runs.metrics import PhaseTimer


def rows(lengths, groups, scores=None, rewards=None, task_scores=None) -> TrajectoryBatch:
    n = len(lengths)
    b = TrajectoryBatch.from_lists([[1]] * n, [[5] * L for L in lengths], [[1] * L for L in lengths],
                                   [[0.0] * L for L in lengths], groups, [{}] * n, ["stop"] * n)
    if scores is not None:
        b.add("scores", torch.tensor(scores))
        b.add("task_scores", torch.tensor(task_scores if task_scores is not None else scores))
        b.add("rewards", torch.tensor(rewards if rewards is not None else scores))
    return b


def test_overlong_soft_punishment_by_hand():
    a = AlgorithmConfig(overlong_buffer=8, overlong_penalty=1.0)
    shaped = overlong_shaped(torch.ones(4), rows([10, 24, 28, 32], [0, 0, 0, 0]), a, max_new_tokens=32)
    assert shaped.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0])
    off = overlong_shaped(torch.ones(2), rows([31, 32], [0, 0]), AlgorithmConfig(), 32)
    assert off.tolist() == [1.0, 1.0]


def test_split_by_signal_keeps_whole_groups_and_judges_by_score():
    b = rows([1] * 6, [0, 0, 1, 1, 2, 2], scores=[1.0, 0.0, 0.5, 0.5, 0.0, 1.0])
    informative, flat = split_by_signal(b)
    assert informative.group_ids == [0, 0, 2, 2] and flat.group_ids == [1, 1]
    # all right, but overlong shaping made the rewards differ: still no accuracy signal
    shaped = rows([1] * 2, [0, 0], scores=[1.0, 1.0], rewards=[1.0, 0.4])
    assert len(split_by_signal(shaped)[0]) == 0
    # reward models make scores differ; the task score (what the filter reads) does not
    modelled = rows([1] * 2, [0, 0], scores=[1.13, 0.97], task_scores=[1.0, 1.0])
    assert len(split_by_signal(modelled)[0]) == 0


class FakeFleet:
    """Completions whose text is the prompt's own answer for 'good' prompts (mixed rewards) and
    a constant for the others (all-equal rewards)."""

    def __init__(self, tok, good_every: int) -> None:
        self.tok, self.good_every, self.calls = tok, good_every, 0

    def generate(self, prompts, spec):
        self.calls += 1
        out = []
        for k, _ in enumerate(prompts):
            good = (self.calls * 100 + k) % self.good_every == 0
            texts = ["7", "9", "7", "9"][: spec.n] if good else ["7"] * spec.n
            ids = [self.tok.encode(t, add_special_tokens=False) for t in texts]
            out.append([Completion(i, [0.0] * len(i), "length" if len(i) >= spec.max_new_tokens else "stop") for i in ids])
        return out


class IsSeven(RewardFunction):
    def __call__(self, completions, messages, samples):
        return [float(c.strip() == "7") for c in completions]


class Prompts:
    def __init__(self) -> None:
        self.count = 0

    def next_prompts(self, k):
        self.count += k
        return [{"messages": [{"role": "user", "content": f"q{self.count + i}"}]} for i in range(k)]


def collect(tok, good_every: int, rounds: int):
    cfg = Config()
    cfg.trainer.prompts_per_step, cfg.rollout.n = 4, 4
    cfg.algorithm.dynamic_sampling, cfg.algorithm.dynamic_sampling_max_rounds = True, rounds
    return collect_batch(1, FakeFleet(tok, good_every), tok, IsSeven(), Prompts(), cfg, PhaseTimer())


def test_dynamic_sampling_draws_until_every_group_has_signal(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    batch, metrics = collect(tok, good_every=2, rounds=5)  # half the prompts of a round are good
    assert len(batch) == 16 and len(set(batch.group_ids)) == 4
    assert metrics["rollout/prompts_drawn"] == 8 and metrics["rollout/filled_groups"] == 0
    _, flat = split_by_signal(batch)
    assert len(flat) == 0


def test_dynamic_sampling_cap_fills_with_flat_groups(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    batch, metrics = collect(tok, good_every=4, rounds=2)  # one good prompt per round, 2 rounds
    assert len(batch) == 16  # the batch size never changes
    assert metrics["rollout/prompts_drawn"] == 8 and metrics["rollout/filled_groups"] == 2
    assert len(set(batch.group_ids)) == 4


def test_overlong_filter_masks_truncated_completions(smollm2_dir):
    from transformers import AutoTokenizer

    from parkrl.collect import generate_single_turn
    from parkrl.engines import SamplingSpec

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    fleet = FakeFleet(tok, good_every=1)
    spec = SamplingSpec(n=2, max_new_tokens=1)  # "7" and "9" are one token: both hit the budget
    batch = generate_single_turn(fleet, tok, Prompts().next_prompts(1), spec, mask_truncated=True)
    assert batch.finish_reasons == ["length", "length"] and batch.loss_mask.tolist() == [[0.0], [0.0]]
    kept = generate_single_turn(fleet, tok, Prompts().next_prompts(1), spec, mask_truncated=False)
    assert kept.loss_mask.tolist() == [[1.0], [1.0]]


def test_single_turn_batch_holds_the_engines_values_as_padded_float32(smollm2_dir):
    """Completions of different lengths (one without logprobs) become [N, T] tensors once; the
    float32 logprobs are what the learner used to convert the engines' floats to."""
    from transformers import AutoTokenizer

    from parkrl.collect import generate_single_turn
    from parkrl.engines import SamplingSpec

    class Fixed:
        def generate(self, prompts, spec):
            return [[Completion([11, 12, 13], [-0.1, -0.2, -0.3], "stop"), Completion([14], [], "length")]]

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    b = generate_single_turn(Fixed(), tok, Prompts().next_prompts(1), SamplingSpec(n=2), mask_truncated=True)
    assert b.response_ids.tolist() == [[11, 12, 13], [14, 0, 0]] and b.response_lengths.tolist() == [3, 1]
    assert b.rollout_logprobs.tolist() == [torch.tensor([-0.1, -0.2, -0.3]).tolist(), [0.0, 0.0, 0.0]]
    assert b.loss_mask.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]  # cut at the budget: not trained

    class Broken:
        def generate(self, prompts, spec):
            return [[Completion([11, 12], [-0.1], "stop")]]

    with pytest.raises(ValueError, match="1 logprobs for 2 tokens"):
        generate_single_turn(Broken(), tok, Prompts().next_prompts(1), SamplingSpec(n=1))
