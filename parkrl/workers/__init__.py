"""Worker groups (Ray actors or in-process) and the fleet of a run."""
from parkrl.workers.group import WorkerDied, WorkerError, WorkerGroup, WorkerTimeout, wait_all

__all__ = ["WorkerDied", "WorkerError", "WorkerGroup", "WorkerTimeout", "wait_all"]
