"""Write example_workflows/*.json (UI format) from the builders in tools/workflows.py.

Run: .venv/bin/python -m tools.make_workflows   (needs the host: `make test` or `make demo` sets it up)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import PACK_DIR, bootstrap, load_nodes  # noqa: E402

DEMO_NOTE = """## RhymeFlow demo (the pack's small trained model, runs on a CPU)
Two branches on the same model, prompt, seed and sigmas. Top: dense sampling (KSamplerSelect uni_pc).
Bottom: **RhymeFlow Trajectory Projection -> CFGGuider -> RhymeFlow Sampler**.

* `warmup_steps` 6 of 30: synchronous steps before any frame skips (the main quality knob).
* strides 3-5: a full pass every 3 steps early, every 5 late; active passes in between compute only keyframes.
* `RhymeFlow Keyframes` count 2: first and last frame plus the semantic scan's picks (the release setting).

The demo model draws coloured shapes from prompts like `a red circle moves right; then a blue square falls`
(see the prompt node's tooltip for the words it knows). The empty latent of 128x128x49 is 16x16x13 latent
pixels, decoded exactly to 13 frames of 32x32 and shown 4x larger. For real videos swap the demo model,
prompt and decode nodes for your Wan loader, text encoder and VAE decode; the RhymeFlow nodes stay."""

TWO_EXPERT_NOTE = """## Wan 2.2 A14B style: two experts with RhymeFlow
The high-noise expert runs the first 10 of 20 steps, the low-noise expert the rest (SplitSigmas at 10).
Each expert has its own RhymeFlow Trajectory Projection and its own RhymeFlow Sampler; the split is a
synchronisation point (every frame is at the same noise level there) and no cache crosses it.
High-noise: warm-up 4 of its 10 steps, strides 2-3 (composition is decided here).
Low-noise: warm-up 1, strides 3-5 (details; this is where most of the saving is).
The demo model stands in for both experts here. Replace the two demo models with your Wan 2.2 high-noise / low-noise UNETLoaders."""


def main() -> None:
    bootstrap()
    load_nodes()
    from tools.workflows import api_to_ui, demo_prompt, two_expert_prompt
    out = PACK_DIR / "example_workflows"
    out.mkdir(exist_ok=True)
    for name, prompt, note in [("rhymeflow_demo", demo_prompt(), DEMO_NOTE),
                               ("rhymeflow_wan22_two_experts_demo", two_expert_prompt(), TWO_EXPERT_NOTE)]:
        (out / f"{name}.json").write_text(json.dumps(api_to_ui(prompt, [note]), indent=1) + "\n")
        print("wrote", out / f"{name}.json")


if __name__ == "__main__":
    main()
