"""scripts/gpu_check.sh's plumbing, on CPU: without CUDA every check is skipped and the script exits
0; with a stub interpreter standing in for the GPU machine, each check's exit status, output and
missing modules map to pass / fail / skipped in summary.txt."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import repo_root

SCRIPTS = {"learner_mfu": "gpu_learner_mfu.py", "colocate": "gpu_check_colocate.py",
           "correction": "gpu_check_correction.py"}

# Stands in for python3 on a GPU machine. Case a: a pass, a missing vllm, a failing check that wrote
# its own correction.json. Case b: a timeout, a script's own "skipped", a usage error (exit 2).
STUB = r'''#!/usr/bin/env bash
case "$1" in
  -c) [[ "$2" == *'"no CUDA"'* ]] || echo "torch stub CUDA 12.9 NVIDIA H200"; exit 0 ;;
esac
case "$STUB_CASE/$(basename "$1")" in
  a/gpu_learner_mfu.py) echo "warming up"; echo '{"check": "learner_mfu", "mfu": 0.41}' ;;
  a/gpu_check_colocate.py) echo "Traceback (most recent call last):" >&2
                           echo "ModuleNotFoundError: No module named 'vllm'" >&2; exit 1 ;;
  a/gpu_check_correction.py) echo '{"ok": false}' > "$3/correction.json"; echo "bf16: 3 failures"; exit 1 ;;
  b/gpu_learner_mfu.py) exit 124 ;;
  b/gpu_check_colocate.py) echo '{"check": "colocate", "skipped": "no CUDA device"}'; exit 2 ;;
  b/gpu_check_correction.py) echo "usage: gpu_check_correction.py [--out OUT]" >&2; exit 2 ;;
  c/*) echo "ModuleNotFoundError: No module named 'transformers'" >&2; exit 1 ;;
esac
'''


def summary(out: Path) -> dict[str, str]:
    lines = (out / "summary.txt").read_text().splitlines()
    assert lines[0].startswith("# ")  # when, and which torch and device
    return dict(line.split(": ", 1) for line in lines[1:])


def test_without_cuda_every_check_is_skipped_and_the_script_exits_cleanly(tmp_path):
    out = subprocess.run(["bash", str(repo_root() / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                         timeout=120, env={"OUT": str(tmp_path), "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert summary(tmp_path) == {name: "skipped: no CUDA" for name in SCRIPTS}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.txt"]


@pytest.fixture
def stub_repo(tmp_path: Path) -> Path:
    """A copy of the script beside placeholder check scripts, and the stub interpreter."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(repo_root() / "scripts" / "gpu_check.sh", tmp_path / "repo" / "scripts")
    for script in SCRIPTS.values():
        (tmp_path / "repo" / "scripts" / script).touch()
    (tmp_path / "python3").write_text(STUB)
    (tmp_path / "python3").chmod(0o755)
    (tmp_path / "out").mkdir()
    return tmp_path


def run_stub(root: Path, case: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "repo" / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=60, env={"OUT": str(root / "out"), "PYTHON": str(root / "python3"),
                                           "STUB_CASE": case, "PATH": "/usr/bin:/bin"})


def test_results_logs_and_json_of_each_check(stub_repo):
    out = run_stub(stub_repo, "a")
    assert out.returncode == 1  # a check failed
    assert summary(stub_repo / "out") == {"learner_mfu": "pass", "colocate": "skipped: needs vllm",
                                          "correction": "fail: exit 1 (see correction.log)"}
    got = stub_repo / "out"
    assert (got / "learner_mfu.json").read_text() == '{"check": "learner_mfu", "mfu": 0.41}\n'
    assert "warming up" in (got / "learner_mfu.log").read_text()
    assert "No module named 'vllm'" in (got / "colocate.log").read_text()  # stderr is in the log too
    assert (got / "correction.json").read_text() == '{"ok": false}\n'  # the script's own, not overwritten


def test_timeouts_and_usage_errors_fail_a_scripts_own_skip_does_not(stub_repo):
    out = run_stub(stub_repo, "b")
    assert out.returncode == 1
    assert summary(stub_repo / "out") == {"learner_mfu": "fail: timed out after 240 s",
                                          "colocate": "skipped: no CUDA device",
                                          "correction": "fail: exit 2 (see correction.log)"}


def test_a_module_other_than_vllm_or_ray_missing_is_a_failure(stub_repo):
    """A GPU image without transformers is broken: it must not pass as "skipped"."""
    out = run_stub(stub_repo, "c")
    assert out.returncode == 1
    assert set(summary(stub_repo / "out").values()) == {"fail: exit 1 (see learner_mfu.log)", "fail: exit 1 (see colocate.log)",
                                                       "fail: exit 1 (see correction.log)"}


def test_a_missing_check_script_is_skipped_by_name(stub_repo):
    (stub_repo / "repo" / "scripts" / "gpu_check_correction.py").unlink()
    (stub_repo / "repo" / "scripts" / "gpu_learner_mfu.py").unlink()
    out = run_stub(stub_repo, "b")
    assert out.returncode == 0
    assert summary(stub_repo / "out")["correction"] == "skipped: scripts/gpu_check_correction.py not found"


# Runs a GPU script's main() on CPU as on the GPU machine (no vllm, ray, pydantic, hydra), with a tiny
# model and CUDA's calls stubbed: catches drift between the never-run scripts and parkrl's API.
CPU_RUN = r'''
import runpy, sys, tempfile
for name in ("vllm", "ray", "pydantic", "pydantic_core", "hydra", "omegaconf", "deepspeed"):
    sys.modules[name] = None  # absent: import fails, find_spec says None
import torch
script = runpy.run_path(sys.argv[1])  # its top-level code (the parkrl import path) as when run
import parkrl.workers.learner as learner_module

def role_device(gpus, key):  # the script must give its learner a GPU
    assert gpus > 0, f"{key}={gpus}"
    return torch.device("cpu")

learner_module.role_device = role_device
for name, stub in {"is_available": lambda: True, "synchronize": lambda: None, "max_memory_allocated": lambda: 0,
                   "get_device_name": lambda i=0: "cpu"}.items():
    setattr(torch.cuda, name, stub)

def tiny_model():
    from tokenizers import Tokenizer, models
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
    config = AutoConfig.for_model("qwen3", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
                                  pad_token_id=0)
    path = tempfile.mkdtemp()
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    return path, config

script["main"].__globals__["qwen3_0_6b_dir"] = tiny_model
sys.argv = ["gpu_learner_mfu.py", "--seq", "48", "--prompt", "16", "--batch", "2", "--steps", "1", "--peak-tflops", "1e-6"]
sys.exit(script["main"]())
'''


def test_learner_mfu_script_runs_on_cpu_without_vllm_ray_or_pydantic(tmp_path):
    out = subprocess.run([sys.executable, "-c", CPU_RUN, str(repo_root() / "scripts" / "gpu_learner_mfu.py")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["check"] == "learner_mfu" and result["tokens_per_s"] > 0 and result["mfu"] > 0
