#!/usr/bin/env bash
# cascadia-plan export for vllm 0.33.0: tier2 replica 0 of llama-3.1-405b, node 1 of 2
# run on host h100-2 (GPUs 0,1,2,3,4,5,6,7); serves port 8000 on h100-1
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
HEAD_ADDR="${HEAD_ADDR:-}"  # the address of the head node; default below
if [ -z "$HEAD_ADDR" ]; then HEAD_ADDR=h100-1; fi
exec vllm serve meta-llama/Llama-3.1-405B-Instruct --config "$HERE"/tier2-llama-3.1-405b-0.yaml --nnodes 2 --node-rank 1 --master-addr "$HEAD_ADDR" --master-port 29500 --headless
