"""Learner-to-rollout weight sync: group set-up, bucketed broadcast, vLLM receiving side."""
from parkrl.sync.buckets import TensorMeta, metas_of, plan_buckets, receive_tensors, send_tensors, tied_names
from parkrl.sync.process_group import free_port, init_sync_group, node_ip

__all__ = [
    "TensorMeta", "free_port", "init_sync_group", "metas_of", "node_ip", "plan_buckets",
    "receive_tensors", "send_tensors", "tied_names",
]
