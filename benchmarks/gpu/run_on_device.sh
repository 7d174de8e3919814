#!/usr/bin/env bash
# CUDA measurements on an NVIDIA machine that cannot install packages.
#
# Expects in .gpu/ (ignored by git, carried to the machine):
#   llcuda.tar.xz       llama_cpp built with -DGGML_CUDA=on, plus gguf, diskcache, platformdirs;
#                       or, for the build step, llsrc.tar.xz (llama-cpp-python's source
#                       distribution without vendor/llama.cpp/{models,docs,benches}) and
#                       whl/ (the gguf, diskcache and platformdirs wheels)
#   starter_template/   the starter model's header and tensor table (shaped_model.py template)
#   llamaNb-TYPE/       a Llama header per size and type (shaped_model.py config: llama8b from
#                       tests/data/configs/llama-3.1-8b.json, llama1b from llama-3.2-1b.json),
#                       for the prompt step
# Writes its outputs under $OUT (default ./out). Steps are named on the command line:
#   bash benchmarks/gpu/run_on_device.sh build hw offload chat recommend imatrix prompt
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT" /tmp/site
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 QUANTDESK_HOME=/tmp/qdhome
if [ ! -f /tmp/site/llama_cpp/__init__.py ] && [ -f .gpu/llcuda.tar.xz ]; then
  tar xJf .gpu/llcuda.tar.xz -C /tmp/site
fi
MODEL=/tmp/shaped.gguf

for step in "$@"; do
  echo "=== $step $(date +%T)"
  if [ "$step" != build ] && [ "${SKIP_STARTER:-0}" != 1 ] && [ ! -f "$MODEL" ]; then
    python3 benchmarks/gpu/shaped_model.py build .gpu/starter_template "$MODEL"
  fi
  case "$step" in
    build) python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
           tar xJf .gpu/llsrc.tar.xz -C /tmp
           # FA=off leaves out the flash-attention kernels: a build in about half the time.
           CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_CUDA_FA=${FA:-on}" \
             CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install -q --no-deps --no-build-isolation \
             --target /tmp/site /tmp/llama_cpp_python-0.3.36 2>&1 | tail -5 ;;
    hw) python3 -m app hw --json | tee "$OUT/hw.json"; python3 -m app hw ;;
    offload) python3 benchmarks/gpu/offload_check.py "$MODEL" --ctx 2048 8192 32768 --ngl -1 9 \
               | tee "$OUT/offload.txt" ;;
    chat) python3 -m app chat "$MODEL" --prompt "Tell me about lighthouses." --max-tokens 128 \
            --temperature 0 --gpu-layers -1 --json-stats 2> >(tee "$OUT/chat_stats.txt" >&2) >/dev/null
          python3 -m app chat "$MODEL" --prompt "Tell me about lighthouses." --max-tokens 128 \
            --temperature 0 --gpu-layers 0 --threads 16 --json-stats 2>&1 >/dev/null | grep '^{' ;;
    recommend) python3 -m app recommend "$MODEL" --task chat | head -20 ;;
    imatrix) python3 benchmarks/gpu/imatrix_gpu_check.py "$MODEL" | tee "$OUT/imatrix.txt" ;;
    prompt) models=()
            [ "${SKIP_STARTER:-0}" = 1 ] || models+=("$MODEL")
            for d in .gpu/llama*b-*; do
              m=/tmp/$(basename "$d").gguf
              [ -f "$m" ] || python3 benchmarks/gpu/shaped_model.py build "$d" "$m"
              models+=("$m")
            done
            fa=(); [ "${FA:-on}" = off ] && fa=(--no-flash-attn)
            python3 benchmarks/gpu/prompt_check.py "${models[@]}" "${fa[@]}" --json "$OUT/prompt.json" \
              | tee "$OUT/prompt.txt" ;;
    *) echo "unknown step $step" ;;
  esac
done
