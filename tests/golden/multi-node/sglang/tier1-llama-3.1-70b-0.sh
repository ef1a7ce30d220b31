#!/usr/bin/env bash
# cascadia-plan export for sglang 0.5.23: tier1 replica 0 of llama-3.1-70b
# run on host h100-0 (GPUs 0,1,2,3); serves port 8000
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=0,1,2,3
exec python3 -m sglang.launch_server --model-path meta-llama/Llama-3.1-70B-Instruct --config "$HERE"/tier1-llama-3.1-70b-0.yaml
