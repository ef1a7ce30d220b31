#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier1 replica 6 of mistral-7b-instruct-v0.1
# run on host h100-0 (GPUs 6); serves port 8006
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=6
exec vllm serve mistralai/Mistral-7B-Instruct-v0.1 --config "$HERE"/tier1-mistral-7b-instruct-v0.1-6.yaml
