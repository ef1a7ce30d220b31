#!/usr/bin/env bash
# Replay the planned trace against tier 1 of the deployment (cascadia-plan export). The router escalates;
# point the URL at your cascade router instead of tier 1 to measure end to end.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$HERE"/results

# vLLM's benchmark (timed_trace replays the timestamps)
vllm bench serve --backend openai-chat --base-url http://h100-0:8000 --endpoint /v1/chat/completions --model mistralai/Mistral-7B-Instruct-v0.1 --served-model-name mistral-7b-instruct-v0.1 --dataset-name timed_trace --dataset-path "$HERE"/trace.mooncake.jsonl --num-prompts 20 --timed-trace-chunk-hash-size 512 --timed-trace-sec-multiplier 0.001 --save-result --result-dir "$HERE"/results

# or AIPerf (mooncake_trace with a fixed schedule)
# aiperf profile --model mistral-7b-instruct-v0.1 --url http://h100-0:8000 --endpoint-type chat --input-file "$HERE"/trace.mooncake.jsonl --custom-dataset-type mooncake_trace --fixed-schedule --request-count 20 --artifact-dir "$HERE"/results/aiperf
