"""A rollout worker whose vLLM engine core runs in a child process, as it does on GPU (on CPU
parkrl runs it in the worker's own process); the child's pid is left in the run directory as
`engine_core_<rank>.pid` for a test to kill it."""
import os
from pathlib import Path

import psutil

from parkrl.workers.engine import EngineWorker


class MultiprocessEngineWorker(EngineWorker):
    def __init__(self, cfg, model_path: str, rank: int) -> None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # parkrl only sets its CPU default (setdefault)
        super().__init__(cfg, model_path, rank)
        cores = [c.pid for c in psutil.Process().children() if "EngineCore" in " ".join(c.cmdline())]
        assert len(cores) == 1, f"expected one vLLM engine core child process, found {cores}"
        out = Path(cfg.trainer.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"engine_core_{rank}.pid").write_text(str(cores[0]))
