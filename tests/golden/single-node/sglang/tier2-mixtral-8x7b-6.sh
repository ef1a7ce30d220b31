#!/usr/bin/env bash
# cascadia-plan export for sglang 0.5.23: tier2 replica 6 of mixtral-8x7b
# run on host h100-2 (GPUs 4,5); serves port 8002
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=4,5
exec python3 -m sglang.launch_server --model-path mistralai/Mixtral-8x7B-Instruct-v0.1 --config "$HERE"/tier2-mixtral-8x7b-6.yaml
