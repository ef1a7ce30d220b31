#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier1 replica 2 of mistral-7b-instruct-v0.1
# run on host h100-0 (GPUs 2); serves port 8002
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=2
exec vllm serve mistralai/Mistral-7B-Instruct-v0.1 --config "$HERE"/tier1-mistral-7b-instruct-v0.1-2.yaml
