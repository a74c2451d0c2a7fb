"""Thin worker shells (learner, rollout) and the groups that run them as Ray actors or locally."""
from parkrl.workers.group import WorkerError, WorkerGroup, WorkerTimeout, wait_all

__all__ = ["WorkerError", "WorkerGroup", "WorkerTimeout", "wait_all"]
