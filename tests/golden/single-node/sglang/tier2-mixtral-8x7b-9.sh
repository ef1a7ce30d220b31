#!/usr/bin/env bash
# cascadia-plan export for sglang 0.5.23: tier2 replica 9 of mixtral-8x7b
# run on host h100-3 (GPUs 2,3); serves port 8001
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=2,3
exec python3 -m sglang.launch_server --model-path mistralai/Mixtral-8x7B-Instruct-v0.1 --config "$HERE"/tier2-mixtral-8x7b-9.yaml
