"""Rebuild examples/ from the public data in ../shared/data (a maintainer's tool, not run by
tests). Usage: python tools/build_examples.py [SHARED_DATA_DIR]"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from planner_cli.io import read_trace, write_text_atomic
from planner_cli.workload.trace import Trace, canonical_lines

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples"
WINDOW_MS = 10 * 60 * 1000  # the first 10 minutes
CHARS_PER_TOKEN = 4  # data README: answer_chars ~ 4 characters per token
OPEN_MODELS = ("mistralai/Mistral-7B-Instruct-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1",
               "Llama-2-70b-chat")


def azure_window() -> None:
    trace = read_trace(DATA / "raw/azure-llm-2023/AzureLLMInferenceTrace_conv.csv", "azure")
    keep = trace.timestamps_ms < WINDOW_MS
    window = Trace(timestamps_ms=trace.timestamps_ms[keep],
                   input_lengths=trace.input_lengths[keep],
                   output_lengths=trace.output_lengths[keep])
    write_text_atomic(EXAMPLES / "azure-conv-10min.jsonl", canonical_lines(window))


def arena_judged() -> None:
    src = DATA / "derived/arena-hard-auto/arena_bench_v1_gpt4_single_scores.csv"
    rows = [r for r in csv.DictReader(src.open()) if r["model"] in OPEN_MODELS]
    rows.sort(key=lambda r: (r["question_id"], OPEN_MODELS.index(r["model"])))
    out = ["# score_scale: 1-10\n",
           "# arena-bench-v1 (lmarena/arena-hard-auto, Apache-2.0): GPT-4 single-answer "
           "scores 1-10 with a GPT-4 reference answer\n",
           "# rows without a usable judge score (empty or -1) are left out\n",
           f"# output_tokens = max(1, round(answer_chars / {CHARS_PER_TOKEN}))\n",
           "request_id,model,score,output_tokens\n"]
    for r in rows:
        if not r["score"] or float(r["score"]) < 0:  # empty or -1: judge parse failure
            continue
        score = float(r["score"])
        tokens = max(1, round(int(r["answer_chars"]) / CHARS_PER_TOKEN))
        out.append(f"{r['question_id']},{r['model']},{score:g},{tokens}\n")
    write_text_atomic(EXAMPLES / "arena-open-models-judged.csv", out)


if __name__ == "__main__":
    azure_window()
    arena_judged()
