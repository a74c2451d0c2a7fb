"""Micro-batch planning by token budget, and that samples batched together do not see each other."""
import pytest
import torch
from test_response import ragged

from parkrl.models.response import ResponseLogprobs, pad_samples
from parkrl.workers.microbatch import padded_tokens, plan_micro_batches, split_to_count


def test_token_budget_plan_by_hand():
    lengths = [5, 50, 10, 100, 12]
    assert plan_micro_batches(lengths, max_samples=4) == [[0, 2, 4, 1], [3]]  # sorted, fixed size
    plan = plan_micro_batches(lengths, max_samples=4, max_tokens=60)
    assert plan == [[0, 2, 4], [1], [3]]  # 3 x 12 = 36 fits, 4 x 50 does not; 100 goes alone
    assert padded_tokens(lengths, plan) == 36 + 50 + 100
    assert plan_micro_batches(lengths, max_samples=2, max_tokens=1000) == [[0, 2], [4, 1], [3]]


def test_a_sample_scores_the_same_alone_and_beside_others(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = ResponseLogprobs(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    g = torch.Generator().manual_seed(1)
    samples = [(torch.randint(3, 999, (p,), generator=g).tolist(), torch.randint(3, 999, (r,), generator=g).tolist())
               for p, r in ((4, 3), (11, 9), (7, 2), (20, 5))]

    def logprobs(rows):
        batch = ragged(pad_samples, [p for p, _ in rows], [r for _, r in rows], [[1] * len(r) for _, r in rows], pad_id=0)
        with torch.no_grad():
            return batch.unpad(model(batch)[0])

    together = logprobs(samples)
    for k, sample in enumerate(samples):
        alone = logprobs([sample])[0]
        assert torch.allclose(torch.tensor(alone), torch.tensor(together[k]), atol=1e-5)


def test_split_to_count_halves_the_widest_until_the_count_is_met():
    plans = [[0, 1, 2, 3], [4], [5, 6]]
    out = split_to_count(plans, 5)
    assert out == [[0], [1], [2, 3], [4], [5, 6]]  # [0..3] halved, then its wider half again
    assert sorted(i for rows in out for i in rows) == list(range(7))  # nothing lost or repeated
    assert split_to_count(plans, 3) == plans
    with pytest.raises(ValueError, match="7 rows into 8"):
        split_to_count(plans, 8)
