#!/usr/bin/env bash
# cascadia-plan export for sglang 0.5.23: tier1 replica 1 of llama-3.1-70b
# run on host h100-0 (GPUs 4,5,6,7); serves port 8001
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=4,5,6,7
exec python3 -m sglang.launch_server --model-path meta-llama/Llama-3.1-70B-Instruct --config "$HERE"/tier1-llama-3.1-70b-1.yaml
