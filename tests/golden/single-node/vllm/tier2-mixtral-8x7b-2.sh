#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier2 replica 2 of mixtral-8x7b
# run on host h100-1 (GPUs 4,5); serves port 8002
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=4,5
exec vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --config "$HERE"/tier2-mixtral-8x7b-2.yaml
