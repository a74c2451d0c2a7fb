"""Receiving side of the weight sync inside vLLM workers.

vLLM mixes this class into each of its workers (`LLM(worker_extension_cls=...)`); the rollout
engine reaches it with `llm.collective_rpc("parkrl_...")`. Each worker (one per tensor-parallel
rank) joins the sync group as its own rank and loads the broadcast weights on its own device:
on CPU, for a plain model, straight into place with parkrl.sync.cpu_load (each layer re-packed
once complete); otherwise with `reload_weights`, which restores vLLM's repacked linear layers
and re-runs post-load processing (plain `load_weights` fails there on CPU). The whole state
dict goes every time, never part of a fused layer; each tensor is loaded while the next ones
are still arriving. In colocated mode (`resources.colocate`) the weights arrive instead as CUDA
IPC handles from the learner rank on the same GPU (parkrl.sync.ipc).
"""
from __future__ import annotations

import logging

from parkrl.sync.buckets import TensorMeta, receive_tensors
from parkrl.sync.cpu_load import CPUWeightLoader
from parkrl.sync.ipc import gpu_uuid, open_shared
from parkrl.sync.process_group import close_sync_group, init_sync_group


class _NoRotaryReloadWarning(logging.Filter):
    """vLLM's in-place reload warns "RotaryEmbedding: Failed to load weights" on every sync: the
    rotary cos/sin cache is a buffer no checkpoint carries, so vLLM puts its own copy back
    (which is right: it does not depend on the weights). Drop that one line, keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "%s: Failed to load weights" and record.args == ("RotaryEmbedding",))


_ROTARY_FILTER = _NoRotaryReloadWarning()  # one instance: a re-join (engine restart) does not stack copies


class WeightSyncExtension:
    """Methods added to every vLLM worker; `self` is the vLLM worker."""

    def parkrl_join_sync_group(self, host: str, port: int, first_rank: int, world_size: int,
                               backend: str, timeout_s: float) -> None:
        """Join the sync group as rank `first_rank` (the engine's: `sync_rank(engine, tp)`) plus this
        worker's tensor-parallel rank; weights are received on this worker's own device."""
        from vllm.distributed import get_tensor_model_parallel_rank

        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_ROTARY_FILTER)
        rank = first_rank + get_tensor_model_parallel_rank()
        close_sync_group(getattr(self, "_parkrl_sync", (None,))[0])
        self._parkrl_sync = None
        group = init_sync_group(host, port, rank, world_size, backend, timeout_s)
        self._parkrl_sync = (group, timeout_s, self.device)

    def parkrl_receive_weights(self, wire_metas: list) -> int:
        """Receive the learner's broadcast and load it; returns the number of tensors."""
        group, timeout_s, device = self._parkrl_sync
        metas = [TensorMeta.from_wire(row) for row in wire_metas]
        loader = self._parkrl_cpu_loader(metas) if device.type == "cpu" else None
        if loader is not None:  # straight into place, then each layer re-packed
            incoming = receive_tensors(group, metas, timeout_s, device=device, into=loader.destinations())
            try:
                return loader.load(incoming)
            finally:
                for _ in incoming:  # after an error: the sender waits for every tensor
                    pass
        incoming = receive_tensors(group, metas, timeout_s, device=device)
        loaded = 0

        def stream():  # vLLM loads bucket k while bucket k + 1 arrives
            nonlocal loaded
            for item in incoming:
                loaded += 1
                yield item

        try:
            self.reload_weights(weights_iterator=stream())
        finally:
            left = sum(1 for _ in incoming)  # the sender waits for every bucket: take them all
        if left:
            raise RuntimeError(f"weight sync: vLLM's reload stopped after {loaded} of {len(metas)} tensors")
        return loaded

    def _parkrl_cpu_loader(self, metas: list[TensorMeta]) -> CPUWeightLoader | None:
        """The direct loader for these metas (built once), or None where vLLM's reload must do."""
        key = tuple(metas)
        cached = getattr(self, "_parkrl_loader", None)
        if cached is None or cached[0] != key:
            cached = (key, CPUWeightLoader.build(self.model_runner.get_model(), metas))
            self._parkrl_loader = cached
        return cached[1]

    def parkrl_empty_cache(self) -> None:
        """Return torch's cached, unused GPU blocks to the driver (no-op on CPU)."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def parkrl_gpu_uuid(self) -> str:
        """The UUID of this worker's GPU (colocated mode pairs it with a learner rank's)."""
        return gpu_uuid(self.device.index)

    def parkrl_receive_shared(self, handles: bytes) -> int:
        """Colocated mode: load weights the learner rank on this GPU shared by CUDA IPC."""
        import torch

        named = open_shared(handles, self.device.index)
        count = len(named)
        self.reload_weights(weights_iterator=iter(named))
        torch.cuda.synchronize()  # loaded before the learner frees its copies
        del named  # closes the IPC mappings
        torch.cuda.empty_cache()  # reload's scratch memory, outside vLLM's pool, back before the KV cache wakes
        return count
