#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (one H100/H200, a CUDA torch and
# transformers, no vLLM, no Ray, no venv), run from the repository root in under 10 minutes:
#
#   OUT=/an/empty/folder bash scripts/gpu_check.sh      # PYTHON=... to pick the interpreter (python3)
#
# Each check runs under its own `timeout`. $OUT gets, per check, <check>.log (its stdout and
# stderr) and <check>.json (the last JSON line it printed), and summary.txt: one line per check,
# "<check>: pass", "fail: why" or "skipped: why". Without CUDA every check is skipped; a check that
# stops on a missing vllm or ray (not on that machine) is "skipped: needs <module>"; any other
# missing module is a failure (a broken GPU image must not pass as skipped).
# The scripts may write more files under $OUT (gpu_check_correction.py: correction.json). Only 8
# files come back from the lent machine: keep it at that. Exit status 1 if a check failed, else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to an empty folder for the results}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
summary="$OUT/summary.txt"
failed=0

# Empty when a CUDA device is there; else why nothing can run.
no_cuda=$("$PY" -c 'import torch; print("" if torch.cuda.is_available() else "no CUDA")' 2>/dev/null \
          || echo "no torch in $PY")
echo "# $(date -u +%FT%TZ) $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no device")' 2>&1 | tail -1)" > "$summary"

record() {  # record CHECK RESULT
  echo "$1: $2" | tee -a "$summary"
  case "$2" in fail*) failed=1 ;; esac
}

outcome() {  # outcome EXIT_STATUS LIMIT_S LOG: pass | fail: why | skipped: why
  local skipped module
  skipped=$(sed -n 's/.*"skipped": "\([^"]*\)".*/\1/p' "$3" | tail -1)  # the scripts' own "no CUDA device" (exit 2)
  module=$(sed -n "s/^ModuleNotFoundError: No module named '\([^'.]*\).*/\1/p" "$3" | tail -1)
  if [ "$1" = 0 ]; then echo pass
  elif [ "$1" = 124 ] || [ "$1" = 137 ]; then echo "fail: timed out after $2 s"
  elif [ "$1" = 2 ] && [ -n "$skipped" ]; then echo "skipped: $skipped"
  elif [ "$module" = vllm ] || [ "$module" = ray ]; then echo "skipped: needs $module"  # not on the lent machine
  else echo "fail: exit $1 (see $(basename "$3"))"
  fi
}

check() {  # check NAME LIMIT_S SCRIPT [ARGS...]
  local name=$1 limit=$2 script=$3 rc json
  shift 3
  if [ ! -f "$script" ]; then record "$name" "skipped: $script not found"; return; fi
  if [ -n "$no_cuda" ]; then record "$name" "skipped: $no_cuda"; return; fi
  timeout -k 10 "$limit" "$PY" "$script" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  json=$(grep '^{' "$OUT/$name.log" | tail -1)
  [ -z "$json" ] || echo "$json" > "$OUT/$name.json"  # a script's own <check>.json stays when it printed none
  record "$name" "$(outcome "$rc" "$limit" "$OUT/$name.log")"
}

# Worst case 240 + 180 + 120 s (+ 10 s each to kill), inside the machine's 10 minutes a command.
check learner_mfu 240 scripts/gpu_learner_mfu.py
check colocate 180 scripts/gpu_check_colocate.py
check correction 120 scripts/gpu_check_correction.py --out "$OUT"
exit "$failed"
