"""Response logprobs from the learner's forward equal a plain full-vocabulary forward."""
import pytest
import torch

from parkrl.batch import pad_ragged
from parkrl.models.response import ResponseLogprobs, pad_samples, share_prompts


def ragged(build, prompts, responses, masks, pad_id):
    """`build` (pad_samples or share_prompts) on ragged lists, padded as a TrajectoryBatch holds them."""
    ids, lengths = pad_ragged(responses, torch.long)
    return build(prompts, ids, lengths.tolist(), pad_ragged(masks)[0], pad_id)


def test_pad_samples_aligns_predicting_positions():
    b = ragged(pad_samples, [[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], [[1, 0], [1, 1, 1]], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert b.predict_positions.tolist() == [[2, 3, 0], [0, 1, 2]]
    assert b.targets.tolist() == [[5, 6, 0], [7, 8, 9]]
    assert b.mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert b.unpad(b.mask) == [[1.0, 0.0], [1.0, 1.0, 1.0]]


def test_response_logprobs_match_full_forward(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    temperature = 0.7
    wrapped = ResponseLogprobs(lm, temperature)
    prompts, responses = [[1, 20, 30, 40], [1, 50]], [[60, 70, 2], [80]]
    b = ragged(pad_samples, prompts, responses, [[1] * len(r) for r in responses], pad_id=2)
    with torch.no_grad():
        logprobs, entropy = wrapped(b)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            logits = lm(torch.tensor([p + r])).logits[0].float() / temperature
            full = torch.log_softmax(logits, -1)
            expected = [full[len(p) - 1 + j, t].item() for j, t in enumerate(r)]
            assert torch.allclose(logprobs[i, : len(r)], torch.tensor(expected), atol=1e-5)
            probs = full[len(p) - 1 : len(p) - 1 + len(r)].exp()
            ent = -(probs * full[len(p) - 1 : len(p) - 1 + len(r)]).sum(-1)
            assert torch.allclose(entropy[i, : len(r)], ent, atol=1e-4)
    # Padding is never projected onto the vocabulary: it reads 0, not the pad token's logprob.
    assert logprobs[1, 1:].eq(0).all() and entropy[1, 1:].eq(0).all()
    assert b.valid.tolist() == [[True, True, True], [True, False, False]]


def test_share_prompts_layout_by_hand():
    b = ragged(share_prompts, [[1, 2, 3], [7, 8], [1, 2, 3]], [[5, 6], [], [9]], [[1, 0], [], [1]], pad_id=0)
    # row 0: prompt [1, 2] once, then suffixes [3, 5] (sample 0) and [3] (sample 2); row 1: [7], no suffix
    assert b.input_ids.tolist() == [[1, 2, 3, 5, 3], [7, 0, 0, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 0, 0, 0, 0]]
    assert b.segments.tolist() == [[0, 0, 1, 1, 2], [0, -1, -1, -1, -1]]
    assert b.gather_rows.tolist() == [0, 1, 0]
    assert b.gather_cols.tolist() == [[2, 3], [0, 0], [4, 0]]
    assert b.targets.tolist() == [[5, 6], [0, 0], [9, 0]] and b.mask.tolist() == [[1, 0], [0, 0], [1, 0]]


@pytest.mark.parametrize("build", [pad_samples, share_prompts])
def test_layouts_read_only_each_rows_own_tokens_of_a_wider_batch(build):
    """A micro-batch's rows come from a batch padded to its longest response: the extra columns
    and whatever sits past each row's length never reach the layout."""
    prompts, lengths = [[1, 2, 3], [1, 2, 3], [7]], [2, 1, 0]
    tight = ragged(build, prompts, [[5, 6], [9], []], [[1, 0], [1], []], pad_id=0)
    ids = torch.tensor([[5, 6, 77, 77], [9, 77, 77, 77], [77, 77, 77, 77]])  # 77: not a response token
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    wide = build(prompts, ids, lengths, mask, 0)
    for name, value in vars(tight).items():
        assert (value.tolist() if isinstance(value, torch.Tensor) else value) == (
            getattr(wide, name).tolist() if isinstance(value, torch.Tensor) else getattr(wide, name)), name
    assert wide.targets.is_contiguous() and wide.mask.is_contiguous()
    per_token = torch.tensor([[0.5, 0.25, 0.0, 0.0], [0.125, 0.0, 0.0, 0.0], [0.0] * 4])  # a batch field, [N, T]
    assert wide.rows_of(per_token, [2, 0, 1]).tolist() == [[0.0, 0.0], [0.5, 0.25], [0.125, 0.0]]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_forward_matches_the_padded_one_in_values_and_gradients(tiny_model_dir, attention):
    """Groups of repeated prompts of different lengths, responses of different lengths, one
    empty: same logprobs, entropy, critic values and gradients as one full row per sample,
    with the sdpa and the eager attention."""
    from transformers import AutoModelForCausalLM

    from parkrl.models.response import ResponseValues

    g = torch.Generator().manual_seed(0)
    groups = [torch.randint(3, 900, (n,), generator=g).tolist() for n in (9, 4, 13)]
    prompts = [groups[i % 3] for i in range(9)]
    responses = [torch.randint(3, 900, (int(torch.randint(0, 7, (1,), generator=g)) if i else 0,), generator=g).tolist()
                 for i in range(9)]
    masks = [[1] * len(r) for r in responses]
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attention)
    results = []
    for batch in (ragged(pad_samples, prompts, responses, masks, 0), ragged(share_prompts, prompts, responses, masks, 0)):
        lm.zero_grad()
        policy, critic = ResponseLogprobs(lm, 0.9), ResponseValues(lm)
        torch.nn.init.normal_(critic.head.weight, generator=torch.Generator().manual_seed(1))
        logprobs, entropy = policy(batch, entropy_grad=True)
        values = critic(batch)
        ((logprobs + 0.1 * entropy + values) * batch.mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in lm.parameters() if p.grad is not None])
        results.append((batch.unpad(logprobs.detach()), batch.unpad(entropy.detach()), batch.unpad(values.detach()),
                        grads))
    (lp_a, ent_a, val_a, grad_a), (lp_b, ent_b, val_b, grad_b) = results
    for a, b in ((lp_a, lp_b), (ent_a, ent_b), (val_a, val_b)):
        assert [len(x) for x in a] == [len(x) for x in b] == [len(r) for r in responses]
        assert torch.allclose(torch.tensor(sum(a, [])), torch.tensor(sum(b, [])), atol=1e-5)
    assert grad_a.norm() > 0 and (grad_a - grad_b).norm() < 1e-5 * grad_a.norm()  # fp32 summation order only
