"""Train the embedded demo model: ComfyUI's WanModel at a small size, flow matching on procedural clips.

Reproducible from the seed (the data of step k is drawn from rng(seed, k)), resumable from the
checkpoint in --work, progress printed every --log steps. The EMA weights are written as fp16
safetensors to models/rhymeflow_demo_wan.safetensors (what the demo nodes load).

    python -m tools.train_demo_model                 # full run (see docs/demo_model.md for the time)
    python -m tools.train_demo_model --resume        # continue after an interruption
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import bootstrap


def make_batch(seed: int, step: int, batch: int, frames: int, uncond_rate: float = 0.1):
    """Latents, contexts and prompts of one training step, all drawn from rng(seed, step)."""
    import numpy as np
    import torch

    from rhymeflow_core.demo_model import encode_pixels, encode_prompt
    from tools.demo_clips import random_prompt, render

    rng = np.random.default_rng([seed, step])
    prompts = [random_prompt(rng) for _ in range(batch)]
    videos = np.stack([render(p, rng, frames) for p in prompts])
    latents = encode_pixels(torch.from_numpy(videos))
    contexts = torch.cat([encode_prompt("" if rng.random() < uncond_rate else p) for p in prompts])
    return latents, contexts, rng


def sample_sigmas(rng, batch: int, shift: float = 3.0):
    """Half logit-normal, half uniform, then time-shifted like ModelSamplingSD3 (more weight on high noise)."""
    import numpy as np
    import torch

    u = np.where(rng.random(batch) < 0.5, 1 / (1 + np.exp(-rng.normal(size=batch))), rng.random(batch))
    sigma = shift * u / (1 + (shift - 1) * u)
    return torch.tensor(np.clip(sigma, 1e-3, 1.0), dtype=torch.float32)


def learning_rate(segments: list[tuple[int, float, float]], step: int) -> tuple[float, float]:
    """(learning rate, noise shift) at a step: cosine from each segment's peak down to 10% of it,
    linear warm-up over the first 5% of the first segment."""
    warmup = max(1, segments[0][0] // 20)
    begin = 0
    for length, peak, shift in segments:
        if step < begin + length or (length, peak, shift) == segments[-1]:
            frac = min(1.0, (step - begin) / length)
            return peak * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))), shift
        begin += length
    raise AssertionError("unreachable")


def init_weights(model) -> None:
    """WanModel is built with ComfyUI's no-init ops; initialise like the Wan reference (zero output head)."""
    import torch

    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d)):
            torch.nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    for name, p in model.named_parameters():
        if name.endswith("norm_q.weight") or name.endswith("norm_k.weight"):
            torch.nn.init.ones_(p)
        elif "modulation" in name:
            torch.nn.init.normal_(p, std=model.dim ** -0.5)
    torch.nn.init.zeros_(model.head.head.weight)
    torch.nn.init.zeros_(model.head.head.bias)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="3600:6e-4:3,1000:3e-4:1",
                    help="segments steps:peak_lr:noise_shift; the learning rate falls from each peak to 10%% of it "
                         "(cosine, warm restarts); the noise-level shift moves training from coarse (3) to all levels (1)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--seed", type=int, default=2606)
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the training forward (1.45x faster per step on the 2-core CPU; needs a C++ compiler). "
                         "Off by default: the shipped weights were trained without it")
    ap.add_argument("--work", default="output/train_demo", help="checkpoint folder")
    ap.add_argument("--out", default=None, help="safetensors to write (default: the bundled path)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export", action="store_true", help="only write the checkpoint's EMA weights (a preview mid-training)")
    ap.add_argument("--log", type=int, default=25)
    ap.add_argument("--save-every", type=int, default=250)
    args = ap.parse_args(argv)

    bootstrap()
    import torch

    from rhymeflow_core.demo_model import DEMO_CONFIG, WEIGHTS
    from tools.tiny_models import build_module

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_module("wan", "t2v", **DEMO_CONFIG)  # ComfyUI's WanModel, initialised below
    init_weights(model)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    segments = [(int(a), float(b), float(c)) for a, b, c in (part.split(":") for part in args.schedule.split(","))]
    total = sum(seg[0] for seg in segments)
    opt = torch.optim.AdamW(model.parameters(), lr=segments[0][1], betas=(0.9, 0.99), weight_decay=0.01)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path, start = work / "checkpoint.pt", 0
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        ema, start = ckpt["ema"], ckpt["step"]
        print(f"resumed at step {start}", flush=True)
    if args.export:
        return export(ema, Path(args.out) if args.out else WEIGHTS, args.seed, start)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"demo WanModel {DEMO_CONFIG}: {n_params / 1e6:.2f} M parameters; {total} steps of batch {args.batch}", flush=True)

    forward = torch.compile(model) if args.compile else model  # same parameters; the state dict stays `model`'s
    t0, losses = time.perf_counter(), []
    for step in range(start, total):
        lr, shift = learning_rate(segments, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x0, context, rng = make_batch(args.seed, step, args.batch, args.frames)
        sigma = sample_sigmas(rng, args.batch, shift)
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype("float32"))
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = forward(xt, sigma * 1000, context)
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        losses.append(loss.item())
        done = step + 1
        if done % args.log == 0 or done == total:
            rate = (done - start) / (time.perf_counter() - t0)
            eta = (total - done) / max(rate, 1e-9)
            print(f"step {done:5d}/{total}  loss {sum(losses) / len(losses):.4f}  lr {lr:.2e}  "
                  f"{rate:.2f} steps/s  eta {eta / 60:.1f} min", flush=True)
            losses = []
        if done % args.save_every == 0 or done == total:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema, "step": done}, ckpt_path)
    export(ema, Path(args.out) if args.out else WEIGHTS, args.seed, total)
    print(f"trained {total - start} steps in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


def export(ema: dict, out: Path, seed: int, steps: int) -> None:
    """EMA weights as fp16 safetensors (10.7 MB; ComfyUI computes in fp32 on a CPU)."""
    import safetensors.torch
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.to(torch.float16).contiguous() for k, v in ema.items()}, str(out),
                                metadata={"rhymeflow_demo": "1", "seed": str(seed), "steps": str(steps)})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), EMA after {steps} steps", flush=True)


if __name__ == "__main__":
    main()
