#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier2 replica 3 of mixtral-8x7b
# run on host h100-1 (GPUs 6,7); serves port 8003
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=6,7
exec vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --config "$HERE"/tier2-mixtral-8x7b-3.yaml
