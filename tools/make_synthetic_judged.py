"""Write examples/r1-cascade/judged-synthetic.csv: a SEEDED SYNTHETIC judged sample for the
Cascadia paper's cascade (no public judged scores exist for these models in shared/data).

Per prompt a latent ease z ~ N(0, 1); model j's judge score (0-100) is
    clip(round(mean_j + SPREAD * (CORRELATION * z + sqrt(1 - CORRELATION^2) * e_j)), 0, 100)
with e_j ~ N(0, 1), so the models agree on which prompts are easy. The means are chosen, not
measured, and the file says so on its first lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MODELS = ("deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-llama-70b", "deepseek-r1")
MEANS = (76.0, 86.0, 96.0)  # chosen for the example, not measured
SPREAD = 14.0
CORRELATION = 0.6
PROMPTS = 500
SEED = 2506


def main() -> None:
    rng = np.random.default_rng(SEED)
    z = rng.normal(size=PROMPTS)
    rows = ["# score_scale: 0-100\n",
            "# synthetic: seeded (seed 2506) model of judge scores with means "
            + ", ".join(f"{m} {mu:g}" for m, mu in zip(MODELS, MEANS, strict=True))
            + f", spread {SPREAD:g}, correlation {CORRELATION:g}; made by "
              "tools/make_synthetic_judged.py, not measured\n",
            "request_id,model,score\n"]
    for p in range(PROMPTS):
        for j, model in enumerate(MODELS):
            e = rng.normal()
            s = MEANS[j] + SPREAD * (CORRELATION * z[p] + math.sqrt(1 - CORRELATION**2) * e)
            rows.append(f"p{p:04d},{model},{int(min(100, max(0, round(s))))}\n")
    out = Path(__file__).resolve().parent.parent / "examples" / "r1-cascade"
    (out / "judged-synthetic.csv").write_text("".join(rows))


if __name__ == "__main__":
    main()
