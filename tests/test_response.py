"""Response logprobs from the learner's forward equal a plain full-vocabulary forward."""
import torch

from parkrl.models.response import ResponseLogprobs, pad_samples


def test_pad_samples_aligns_predicting_positions():
    b = pad_samples([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], [[1, 0], [1, 1, 1]], pad_id=0)
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
    b = pad_samples(prompts, responses, [[1] * len(r) for r in responses], pad_id=2)
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
