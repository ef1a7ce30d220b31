"""Write examples/r1-cascade/judged-synthetic.csv: a SEEDED SYNTHETIC judged sample for the
Cascadia paper's cascade (no public judged scores exist for these models in shared/data).

Per prompt a latent ease z ~ N(0, 1); model j's judge score (0-100) is
    clip(round(mean_j + SPREAD * (CORRELATION * z + sqrt(1 - CORRELATION^2) * e_j)), 0, 100)
with e_j ~ N(0, 1), so the models agree on which prompts are easy. The means are chosen, not
measured, and the file says so on its first lines.

Output lengths are MEASURED, not synthetic: each prompt is paired (seeded, its own random
stream, so the scores do not change) with one of the questions that both DeepSeek-R1 and
R1-Distill-Qwen-7B answered in ../shared/data/derived/reasoning-lengths/
output_tokens_per_response.csv (LRM token economy, Apache-2.0; five sampled responses per
question and model), and takes one sampled response's token count of each. R1-Distill-
Llama-70B has no measured lengths there: it is given R1's on the same prompt (an assumption,
stated in the file's header).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

MODELS = ("deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-llama-70b", "deepseek-r1")
MEANS = (76.0, 86.0, 96.0)  # chosen for the example, not measured
SPREAD = 14.0
CORRELATION = 0.6
PROMPTS = 500
SEED = 2506
ROOT = Path(__file__).resolve().parent.parent
LENGTHS = ROOT.parent / "shared" / "data" / "derived" / "reasoning-lengths" / \
    "output_tokens_per_response.csv"
# whose measured lengths each model takes (the 70B distill: R1's, see the docstring)
LENGTH_OF = {"deepseek-r1-distill-qwen-7b": "deepseek-r1-distill-qwen-7b",
             "deepseek-r1-distill-llama-70b": "deepseek-r1", "deepseek-r1": "deepseek-r1"}


def measured_lengths() -> dict[str, dict[str, list[int]]]:
    """question -> model -> sampled response lengths, for questions answered by every model
    LENGTH_OF names."""
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    with LENGTHS.open() as f:
        for row in csv.DictReader(f):
            table[row["question_id"]][row["model"]].append(int(row["output_tokens"]))
    wanted = set(LENGTH_OF.values())
    return {q: dict(m) for q, m in sorted(table.items()) if wanted <= set(m)}


def main() -> None:
    rng = np.random.default_rng(SEED)
    z = rng.normal(size=PROMPTS)
    lengths = measured_lengths()
    questions = sorted(lengths)
    pick = np.random.default_rng([SEED, 1])
    rows = ["# score_scale: 0-100\n",
            "# synthetic: seeded (seed 2506) model of judge scores with means "
            + ", ".join(f"{m} {mu:g}" for m, mu in zip(MODELS, MEANS, strict=True))
            + f", spread {SPREAD:g}, correlation {CORRELATION:g}; made by "
              "tools/make_synthetic_judged.py, not measured\n",
            "# output_tokens: MEASURED reasoning-model response lengths (LRM token economy "
            f"evaluation stats, Apache-2.0; {len(questions)} questions answered by both R1 "
            "and R1-Distill-Qwen-7B, one sampled response each, paired with prompts by seed); "
            "R1-Distill-Llama-70B is given R1's length on the same prompt (assumed: no "
            "measured lengths); see NOTICE.md\n",
            "request_id,model,score,output_tokens\n"]
    for p in range(PROMPTS):
        q = lengths[questions[int(pick.integers(len(questions)))]]
        drawn = {m: q[m][int(pick.integers(len(q[m])))] for m in sorted(set(LENGTH_OF.values()))}
        for j, model in enumerate(MODELS):
            e = rng.normal()
            s = MEANS[j] + SPREAD * (CORRELATION * z[p] + math.sqrt(1 - CORRELATION**2) * e)
            rows.append(f"p{p:04d},{model},{int(min(100, max(0, round(s))))},"
                        f"{drawn[LENGTH_OF[model]]}\n")
    out = ROOT / "examples" / "r1-cascade"
    (out / "judged-synthetic.csv").write_text("".join(rows))


if __name__ == "__main__":
    main()
