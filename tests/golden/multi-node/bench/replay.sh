#!/usr/bin/env bash
# Replay the planned trace through the cascade router (cascadia-plan export): start it first,
#   cascadia-plan route --config ../router/cascade.yaml
# and set ROUTER_URL when it listens elsewhere. The tokenizer is tier 1's.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROUTER_URL="${ROUTER_URL:-http://127.0.0.1:8080}"
mkdir -p "$HERE"/results

# vLLM's benchmark (timed_trace replays the timestamps)
vllm bench serve --backend openai-chat --base-url "$ROUTER_URL" --endpoint /v1/chat/completions --model meta-llama/Llama-3.1-70B-Instruct --served-model-name llama-405b-cascade --dataset-name timed_trace --dataset-path "$HERE"/trace.mooncake.jsonl --num-prompts 20 --timed-trace-chunk-hash-size 512 --timed-trace-sec-multiplier 0.001 --save-result --result-dir "$HERE"/results --goodput ttft:2000 e2el:60000

# or AIPerf (mooncake_trace with a fixed schedule)
# aiperf profile --model llama-405b-cascade --url "$ROUTER_URL" --endpoint-type chat --input-file "$HERE"/trace.mooncake.jsonl --custom-dataset-type mooncake_trace --fixed-schedule --request-count 20 --artifact-dir "$HERE"/results/aiperf
