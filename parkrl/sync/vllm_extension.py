"""Receiving side of the weight sync inside vLLM workers.

vLLM mixes this class into each of its workers (`LLM(worker_extension_cls=...)`); the rollout
engine reaches it with `llm.collective_rpc("parkrl_...")`. It joins the sync group as one
rank and reloads the broadcast weights with `reload_weights`, which on CPU restores vLLM's
repacked linear layers and re-runs post-load processing (plain `load_weights` fails there).
The whole state dict is reloaded at once, never part of a fused layer. In colocated mode
(`resources.colocate`) the weights arrive instead as CUDA IPC handles from the learner rank on
the same GPU (parkrl.sync.ipc).
"""
from __future__ import annotations

from parkrl.sync.buckets import TensorMeta, receive_tensors
from parkrl.sync.group import init_sync_group
from parkrl.sync.ipc import open_shared


class WeightSyncExtension:
    """Methods added to every vLLM worker; `self` is the vLLM worker."""

    def parkrl_join_sync_group(self, host: str, port: int, rank: int, world_size: int,
                               backend: str, timeout_s: float) -> None:
        group = init_sync_group(host, port, rank, world_size, backend, timeout_s)
        self._parkrl_sync = (group, timeout_s, "cuda" if backend == "nccl" else "cpu")

    def parkrl_receive_weights(self, wire_metas: list) -> int:
        group, timeout_s, device = self._parkrl_sync
        metas = [TensorMeta.from_wire(row) for row in wire_metas]
        named = list(receive_tensors(group, metas, timeout_s, device=device))
        self.reload_weights(weights_iterator=iter(named))
        return len(named)


    def parkrl_receive_shared(self, handles: bytes) -> int:
        """Colocated mode: load weights the learner rank on this GPU shared by CUDA IPC."""
        import torch

        named = open_shared(handles, torch.cuda.current_device())
        self.reload_weights(weights_iterator=iter(named))
        torch.cuda.synchronize()  # loaded before the learner frees its copies
        return len(named)
