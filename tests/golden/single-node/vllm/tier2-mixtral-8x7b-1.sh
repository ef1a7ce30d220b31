#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier2 replica 1 of mixtral-8x7b
# run on host h100-1 (GPUs 2,3); serves port 8001
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=2,3
exec vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --config "$HERE"/tier2-mixtral-8x7b-1.yaml
