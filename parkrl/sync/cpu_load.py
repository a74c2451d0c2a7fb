"""Loading synced weights straight into a vLLM model on CPU, without vLLM's generic reload.

On CPU, vLLM packs every linear layer's weight into a oneDNN handle and frees the plain
weight, so its `reload_weights` rebuilds each layer (meta tensors, a fresh copy of every
weight, the checkpoint-name mapping in Python) before packing it again. This loader learns once
where each checkpoint tensor goes and has the transfer write every tensor straight there:
norms and embeddings into their parameters, linear weights (q/k/v and gate/up as row slices
of one fused tensor) into fresh tensors that each layer's own `process_weights_after_loading`
packs as soon as its last part has arrived. A tied vocabulary matrix (input embedding and
output head) is packed once and the handle shared; vLLM packs it twice.

`CPUWeightLoader.build` returns None for anything it does not know exactly (quantized or
LoRA layers, tensor parallelism, a name without a home, a vLLM parameter nothing writes); the
engine then uses `reload_weights`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from parkrl.sync.buckets import TensorMeta

_PLAIN_METHODS = ("UnquantizedLinearMethod", "UnquantizedEmbeddingMethod")


@dataclass
class _Layer:
    """A vLLM module with a packing step, and the checkpoint tensors it needs before packing."""

    module: torch.nn.Module
    parts: set[str] = field(default_factory=set)
    fresh: dict[str, tuple[tuple[int, ...], torch.dtype]] = field(default_factory=dict)  # freed params to rebuild
    tied: list[torch.nn.Module] = field(default_factory=list)  # modules with the same weight: take this packed handle

    def share_handle(self) -> None:
        """Give the tied modules this module's packed weight (the same matrix, packed once)."""
        for module in self.tied:
            module.cpu_linear = self.module.cpu_linear


@contextmanager
def _one_core_left() -> Iterator[None]:
    """Pack on one OpenMP thread fewer, leaving a core to the transfer's receiving threads.
    On a 2-core host the two pack threads and gloo's receive fought for the cores (and the
    pack threads spun between layers): 0.45 s per SmolLM2 sync, 0.39 s with one pack thread.
    (vLLM's CPU worker turns `torch.set_num_threads` into a no-op once it has bound its
    threads; `torch._C.set_num_threads` is the function behind it.)"""
    threads = torch.get_num_threads()
    if threads > 1:
        torch._C.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch._C.set_num_threads(threads)


def _packing_groups(sharing: list[torch.nn.Module]) -> list[list[torch.nn.Module]]:
    """The modules that hold one parameter, grouped so that each group is packed once. Tied
    vocabulary matrices (input embedding and output head) on CPU: one group, since vLLM's
    embedding method only builds `cpu_linear` from the weight; anything else: one per module."""
    embeddings = [m for m in sharing if type(m.quant_method).__name__ == "UnquantizedEmbeddingMethod"
                  and hasattr(m, "cpu_linear")]
    if len(embeddings) == len(sharing) > 1:
        return [sharing]
    return [[m] for m in sharing]


@dataclass(frozen=True)
class _Slot:
    """Where one checkpoint tensor lands: rows [start, start + rows) of `param` (in place) or of
    the fresh tensor that replaces `layer`'s freed parameter `pname`."""

    start: int
    rows: int
    param: torch.Tensor | None = None
    layer: _Layer | None = None
    pname: str = ""


class CPUWeightLoader:
    """Where each synced tensor lands in one vLLM model (tensor parallel 1, on CPU)."""

    def __init__(self, slots: dict[str, _Slot], layers: list[_Layer]) -> None:
        self._slots, self._layers = slots, layers
        self._fresh: dict[tuple[int, str], torch.Tensor] = {}
        self._owners: dict[str, list[_Layer]] = {}  # checkpoint name -> layers that need it before packing
        for layer in layers:
            for name in layer.parts:
                self._owners.setdefault(name, []).append(layer)

    @staticmethod
    def build(model: torch.nn.Module, metas: list[TensorMeta]) -> "CPUWeightLoader | None":
        """The loader for `model` and the learner's `metas`, or None when this model is not plain."""
        modules = dict(model.named_modules())
        for module in modules.values():
            method = getattr(module, "quant_method", None)
            if method is not None and type(method).__name__ not in _PLAIN_METHODS:
                return None
            if getattr(module, "tp_size", 1) != 1 or "LoRA" in type(module).__name__:
                return None
        packed = getattr(model, "packed_modules_mapping", {}) or {}
        fused_of = {part: (fused, i, len(parts)) for fused, parts in packed.items() for i, part in enumerate(parts)}
        by_target: dict[tuple[str, str], list[TensorMeta | None]] = {}  # (vLLM module, param) -> its parts in order
        for meta in metas:
            module_name, _, pname = meta.name.rpartition(".")
            parent, _, leaf = module_name.rpartition(".")
            if leaf in fused_of:
                fused, index, count = fused_of[leaf]
                key = (f"{parent}.{fused}" if parent else fused, pname)
                by_target.setdefault(key, [None] * count)[index] = meta
            elif (module_name, pname) in by_target:
                return None
            else:
                by_target[(module_name, pname)] = [meta]

        slots: dict[str, _Slot] = {}
        layers: dict[int, _Layer] = {}
        written: set[int] = set()
        for (module_name, pname), parts in by_target.items():
            module = modules.get(module_name)
            param = getattr(module, pname, None)
            if not isinstance(param, torch.nn.Parameter) or any(p is None for p in parts):
                return None
            # (A second name for a written parameter, a tied lm_head, is written in place again: same values.)
            if len({(p.shape[1:], p.dtype) for p in parts}) != 1:
                return None
            shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
            dtype = getattr(torch, parts[0].dtype)
            sharing = [m for m in modules.values() if getattr(m, "quant_method", None) is not None
                       and any(p is param for p in m.parameters(recurse=False))]  # a tied lm_head too
            if param.numel() == 0 and id(param) not in written:  # a packed linear weight, freed by vLLM: rebuilt, then packed
                expected = (getattr(module, "output_size_per_partition", None), getattr(module, "input_size_per_partition", None))
                if pname != "weight" or shape != expected or sharing != [module]:
                    return None
                layer = layers.setdefault(id(module), _Layer(module))
                layer.fresh[pname] = (shape, dtype)
                place = {"layer": layer, "pname": pname}
            elif tuple(param.shape) == shape and param.dtype == dtype and param.is_contiguous():
                place = {"param": param.data}
            else:
                return None
            start = 0
            for p in parts:
                slots[p.name] = _Slot(start, p.shape[0], **place)
                start += p.shape[0]
            for group in _packing_groups(sharing):
                layer = layers.setdefault(id(group[0]), _Layer(group[0]))
                layer.parts.update(p.name for p in parts)
                layer.tied = group[1:]
            written.add(id(param))
        if any(param.numel() and id(param) not in written for param in model.parameters()):
            return None  # a weight the sync would leave stale
        if any(not layer.parts for layer in layers.values()):
            return None
        for layer in layers.values():
            layer.share_handle()  # drops the duplicate handle vLLM packed at start-up
        return CPUWeightLoader(slots, list(layers.values()))

    def destinations(self) -> dict[str, torch.Tensor]:
        """For one sync: the tensor each checkpoint name is received into (fresh ones for packed layers)."""
        self._fresh = {(id(layer), pname): torch.empty(shape, dtype=dtype)
                       for layer in self._layers for pname, (shape, dtype) in layer.fresh.items()}
        out = {}
        for name, slot in self._slots.items():
            full = slot.param if slot.layer is None else self._fresh[(id(slot.layer), slot.pname)]
            out[name] = full[slot.start: slot.start + slot.rows]  # leading rows: contiguous
        return out

    def load(self, incoming: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Consume the received tensors (already in place, from `destinations()`); pack each layer
        once its last part is in. Returns the number of tensors received."""
        waiting = {id(layer): set(layer.parts) for layer in self._layers}
        count = 0
        with _one_core_left():
            for name, _ in incoming:
                count += 1
                for layer in self._owners.get(name, ()):
                    waiting[id(layer)].discard(name)
                    if not waiting[id(layer)]:
                        self._pack(layer)
        self._fresh = {}
        missing = sorted(n for names in waiting.values() for n in names)
        if missing:
            raise RuntimeError(f"weight sync: {len(missing)} tensors never arrived, e.g. {missing[:3]}")
        return count

    def _pack(self, layer: _Layer) -> None:
        for pname in layer.fresh:  # the layer's method packs it and frees it again
            setattr(layer.module, pname, torch.nn.Parameter(self._fresh[(id(layer), pname)], requires_grad=False))
        layer.module.quant_method.process_weights_after_loading(layer.module)
        layer.share_handle()
