"""LoRA adapters through PEFT, and the merged weights the engines receive.

Adapters are injected into the HF model in place (`peft.inject_adapter_in_model`), so the
model keeps its class and its `base_model`/output head, and every other weight is frozen.
The engines get plain weights: for each adapted linear layer `W + (alpha / r) * B @ A` under the
layer's original name, so vLLM (and `final/`) need no LoRA support.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

_BASE = ".base_layer."


def add_lora(lm: nn.Module, rank: int, alpha: float, targets: list[str]) -> nn.Module:
    """Inject rank-`rank` LoRA adapters into the `targets` linear layers and freeze the rest."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    lm = inject_adapter_in_model(config, lm)
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name)
    if not any(p.requires_grad for p in lm.parameters()):
        raise ValueError(f"learner.lora_targets={list(targets)} matched no layer of the model")
    return lm


def plain_name(name: str) -> str:
    """A parameter's name in the plain model (`.base_layer.` of an adapted layer removed)."""
    return name.replace(_BASE, ".")


def plain_names(items: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """The state dict as the plain model names it: adapters dropped, `.base_layer.` removed
    (the tensors are the base weights: same shapes and dtypes as the merged ones)."""
    return [(plain_name(n), t) for n, t in items if ".lora_" not in n]


def merged_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Plain full weights: every adapted layer's `W + scaling * B @ A`, under its original name."""
    out = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        if _BASE in name and name.endswith(".weight"):
            layer = name[: -len(_BASE + "weight")]
            a = state[f"{layer}.lora_A.default.weight"].to(torch.float32)
            b = state[f"{layer}.lora_B.default.weight"].to(torch.float32)
            tensor = (tensor.to(torch.float32) + scaling * (b @ a)).to(tensor.dtype)
        out[name.replace(_BASE, ".")] = tensor
    return out
