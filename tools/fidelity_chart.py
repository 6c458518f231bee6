"""docs/fidelity.png: PSNR against model cost, one panel per reference step count, drawn with PIL.

The step-reduction frontier is a line (its points labelled with their step counts); the methods are
points: filled at the cost measured on this machine, hollow at a real-size model's cost, joined by
a thin line. Up and left is better; a point above the line beats sampling with fewer steps.
"""
from __future__ import annotations

from pathlib import Path

PANEL_W, H, PAD = 430, 560, 56
COLOURS = {"preset quality": "#2980b9", "preset balanced": "#c0392b", "preset fast": "#e67e22", "EasyCache": "#7f8c8d"}
OTHER = "#8e44ad"


class Panel:
    """Maps (cost, PSNR) to pixels inside one panel."""

    def __init__(self, left: float, reference: int, y0: float, y1: float):
        self.left, self.x1, self.y0, self.y1 = left, reference * 1.04, y0, y1

    def xy(self, cost: float, psnr: float) -> tuple[float, float]:
        x = self.left + PAD + cost / self.x1 * (PANEL_W - PAD - 12)
        return x, H - PAD - (psnr - self.y0) / (self.y1 - self.y0) * (H - 2 * PAD)


def _axes(d, p: Panel, reference: int, pairs: int) -> None:
    left, right = p.xy(0, p.y0)[0], p.xy(p.x1, p.y0)[0]
    d.rectangle([left, PAD, right, H - PAD], outline="black")
    for k in range(6):
        c, v = k * p.x1 / 5, p.y0 + k * (p.y1 - p.y0) / 5
        d.text((p.xy(c, p.y0)[0] - 6, H - PAD + 6), f"{c:.0f}", fill="black")
        d.text((left - 34, p.xy(0, v)[1] - 6), f"{v:.1f}", fill="black")
    d.text((left, PAD - 18), f"reference: dense {reference} steps ({pairs} pairs)", fill="black")


def _frontier(d, p: Panel, rows: list[dict]) -> None:
    pts = sorted((r["cost"], r["psnr"], r["steps"]) for r in rows if r["group"] == "frontier")
    d.line([p.xy(c, v) for c, v, _ in pts], fill="black", width=2)
    for c, v, n in pts:
        x, y = p.xy(c, v)
        d.rectangle([x - 3, y - 3, x + 3, y + 3], fill="black")
        d.text((x - 4, y + 6), str(n), fill="black")


def _methods(d, p: Panel, rows: list[dict]) -> None:
    for k, r in enumerate(r for r in rows if r["group"] != "frontier"):
        col = COLOURS.get(r["method"], OTHER)
        (x, y), (xr, yr) = p.xy(r["cost"], r["psnr"]), p.xy(r["cost_real"], r["psnr"])
        d.line([xr, yr, x, y], fill=col)
        d.ellipse([xr - 5, yr - 5, xr + 5, yr + 5], outline=col, width=2)
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=col)
        d.text((x + 8, y - 14 - 11 * (k % 2)), r["method"].replace("preset ", ""), fill=col)


def chart(summary: list[dict], meta: dict, path: Path) -> None:
    from PIL import Image, ImageDraw

    refs = sorted({r["reference"] for r in summary})
    psnrs = [r["psnr"] for r in summary]
    y0, y1 = min(psnrs) - 1, max(psnrs) + 1
    img = Image.new("RGB", (PANEL_W * len(refs) + 20, H + 30), "white")
    d = ImageDraw.Draw(img)
    for i, ref in enumerate(refs):
        p = Panel(i * PANEL_W + 10, ref, y0, y1)
        rows = [r for r in summary if r["reference"] == ref]
        _axes(d, p, ref, meta["pairs"])
        _frontier(d, p, rows)
        _methods(d, p, rows)
    d.text((20, 12), f"PSNR dB vs dense against model cost (full-pass equivalents); profile {meta['profile']}, "
           f"{meta['frames']} frames. Line: fewer dense steps. Filled: cost here; hollow: real-size cost.", fill="black")
    d.text((img.width / 2 - 150, H + 8), "model cost (full-pass equivalents, lower is faster)", fill="black")
    img.save(path)
