#!/usr/bin/env bash
# cascadia-plan export for sglang 0.5.23: tier1 replica 5 of mistral-7b-instruct-v0.1
# run on host h100-0 (GPUs 5); serves port 8005
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=5
exec python3 -m sglang.launch_server --model-path mistralai/Mistral-7B-Instruct-v0.1 --config "$HERE"/tier1-mistral-7b-instruct-v0.1-5.yaml
