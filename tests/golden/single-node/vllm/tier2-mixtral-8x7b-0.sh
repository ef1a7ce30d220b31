#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier2 replica 0 of mixtral-8x7b
# run on host h100-1 (GPUs 0,1); serves port 8000
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=0,1
exec vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --config "$HERE"/tier2-mixtral-8x7b-0.yaml
