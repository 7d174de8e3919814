#!/usr/bin/env bash
# CUDA measurements on an NVIDIA machine that cannot install packages.
#
# Expects in .gpu/ (ignored by git, carried to the machine):
#   llcuda.tar.xz       llama_cpp built with -DGGML_CUDA=on, plus gguf, diskcache, platformdirs
#   starter_template/   the starter model's header and tensor table (shaped_model.py template)
# Writes its outputs under $OUT (default ./out). Steps are named on the command line:
#   bash benchmarks/gpu/run_on_device.sh hw offload chat recommend imatrix
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT" /tmp/site
[ -f /tmp/site/llama_cpp/__init__.py ] || tar xJf .gpu/llcuda.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 QUANTDESK_HOME=/tmp/qdhome
MODEL=/tmp/shaped.gguf
[ -f "$MODEL" ] || python3 benchmarks/gpu/shaped_model.py build .gpu/starter_template "$MODEL"

for step in "$@"; do
  echo "=== $step"
  case "$step" in
    hw) python3 -m app hw --json | tee "$OUT/hw.json"; python3 -m app hw ;;
    offload) python3 benchmarks/gpu/offload_check.py "$MODEL" --ctx 2048 8192 32768 --ngl -1 9 \
               | tee "$OUT/offload.txt" ;;
    chat) python3 -m app chat "$MODEL" --prompt "Tell me about lighthouses." --max-tokens 128 \
            --temperature 0 --gpu-layers -1 --json-stats 2> >(tee "$OUT/chat_stats.txt" >&2) >/dev/null
          python3 -m app chat "$MODEL" --prompt "Tell me about lighthouses." --max-tokens 128 \
            --temperature 0 --gpu-layers 0 --threads 16 --json-stats 2>&1 >/dev/null | grep '^{' ;;
    recommend) python3 -m app recommend "$MODEL" --task chat | head -20 ;;
    imatrix) python3 benchmarks/gpu/imatrix_gpu_check.py "$MODEL" | tee "$OUT/imatrix.txt" ;;
    *) echo "unknown step $step" ;;
  esac
done
