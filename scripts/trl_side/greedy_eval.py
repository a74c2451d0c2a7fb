"""Greedy held-out accuracy of an HF model directory on eval.jsonl (the same evaluator for
parkrl's and TRL's final models): last integer of the completion == answer.

    python greedy_eval.py MODEL_DIR eval.jsonl
"""
from __future__ import annotations

import json
import re
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    model_dir, eval_file = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in open(eval_file)]
    correct = 0
    for k in range(0, len(rows), 50):
        chunk = rows[k:k + 50]
        texts = [tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=32, do_sample=False, pad_token_id=tok.pad_token_id)
        for r, ids in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
            found = re.findall(r"-?\d+", tok.decode(ids, skip_special_tokens=True))
            correct += bool(found) and found[-1] == str(r["answer"]).strip()
    print(json.dumps({"model": model_dir, "accuracy": correct / len(rows), "n": len(rows)}))


if __name__ == "__main__":
    main()
