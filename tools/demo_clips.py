"""Procedural training clips for the demo model: coloured shapes that move, with cuts and fades.

Prompts follow the demo grammar (rhymeflow_core/demo_prompt.py, which also parses them):
`random_prompt` draws one, `render` draws a clip that matches it (positions, sizes and speeds are
random; the words fix colour, kind and direction). Frames are 32x32 RGB in [0, 1] on a dark background.
"""
from __future__ import annotations

import numpy as np

from rhymeflow_core.demo_prompt import AND, KINDS, MOTIONS, SCENE_BREAK, TRANSITIONS, parse_prompt
from rhymeflow_core.demo_prompt import COLOURS as COLOUR_WORDS

SIZE = 32
FRAMES = 13
SUPERSAMPLE = 4
BACKGROUND = (0.06, 0.06, 0.08)
COLOURS = {  # the RGB of each colour word, in the vocabulary's order (random_shape draws by position)
    "red": (0.92, 0.16, 0.14), "green": (0.18, 0.80, 0.24), "blue": (0.16, 0.34, 0.95),
    "yellow": (0.96, 0.86, 0.16), "white": (0.95, 0.95, 0.95), "cyan": (0.14, 0.86, 0.90),
    "magenta": (0.90, 0.20, 0.85), "orange": (0.98, 0.55, 0.10),
}
assert tuple(COLOURS) == COLOUR_WORDS, "every colour word of rhymeflow_core/demo_prompt.py, in its order"


def random_shape(rng: np.random.Generator) -> tuple[str, str, str]:
    return (str(rng.choice(list(COLOURS))), str(rng.choice(KINDS)), str(rng.choice(MOTIONS)))


def random_prompt(rng: np.random.Generator) -> str:
    """Mostly one scene with one or two shapes; a quarter of the clips have a cut or a fade."""
    def scene():
        n = rng.choice([1, 2, 3], p=[0.62, 0.31, 0.07])
        return f" {AND} ".join("a {} {} {}".format(*random_shape(rng)) for _ in range(n))
    text = scene()
    if rng.random() < 0.25:
        text += f"{SCENE_BREAK} " + str(rng.choice(list(TRANSITIONS))) + " " + scene()
    return text


def _trajectory(motion: str, half: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """Centre positions [n, 2] (x, y) in pixels for one shape."""
    lo, hi = half + 1, SIZE - half - 1
    t = np.arange(n, dtype=np.float64)
    x0, y0 = rng.uniform(lo, hi, 2)
    speed = rng.uniform(1.4, 2.6)
    if motion in ("moves left", "moves right", "moves up", "moves down"):
        sign = -1 if motion in ("moves left", "moves up") else 1
        start = rng.uniform(-half, SIZE * 0.45)  # may start outside (enters) and run out (leaves)
        along = start + speed * t if sign > 0 else SIZE - start - speed * t
        other = np.full(n, y0 if "left" in motion or "right" in motion else x0)
        return np.stack([along, other] if "left" in motion or "right" in motion else [other, along], 1)
    if motion == "falls":
        y0 = rng.uniform(-half, SIZE * 0.35)
        y = np.minimum(y0 + 0.5 * rng.uniform(0.25, 0.45) * t ** 2 + rng.uniform(0, 0.6) * t, SIZE - half - 0.5)
        return np.stack([np.full(n, x0), y], 1)
    if motion == "bounces":
        vx, vy = speed * rng.choice([-1, 1]), speed * rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
        pos, out = np.array([x0, y0]), []
        vel = np.array([vx, vy])
        for _ in range(n):
            out.append(pos.copy())
            pos = pos + vel
            for k in range(2):
                if pos[k] < lo or pos[k] > hi:
                    pos[k] = 2 * (lo if pos[k] < lo else hi) - pos[k]
                    vel[k] = -vel[k]
        return np.array(out)
    return np.tile([x0, y0], (n, 1))  # stays


def _mask(kind: str, cx: float, cy: float, half: float) -> np.ndarray:
    """Anti-aliased coverage [SIZE, SIZE] of one shape (supersampled)."""
    s = SUPERSAMPLE
    g = (np.arange(SIZE * s) + 0.5) / s
    x, y = g[None, :] - cx, g[:, None] - cy
    if kind == "circle":
        inside = x * x + y * y <= half * half
    elif kind == "square":
        inside = (np.abs(x) <= half * 0.88) & (np.abs(y) <= half * 0.88)
    else:  # triangle, apex up
        inside = (y <= half * 0.85) & (y >= -half) & (np.abs(x) <= (y + half) * 0.58)
    return inside.reshape(SIZE, s, SIZE, s).mean(axis=(1, 3))


def _draw_scene(shapes, rng: np.random.Generator, n: int) -> np.ndarray:
    frames = np.tile(np.array(BACKGROUND, dtype=np.float32), (n, SIZE, SIZE, 1))
    for colour, kind, motion in shapes:
        half = rng.uniform(3.5, 6.0)
        path = _trajectory(motion, half, rng, n)
        rgb = np.array(COLOURS[colour], dtype=np.float32)
        for f, (cx, cy) in enumerate(path):
            m = _mask(kind, cx, cy, half)[..., None].astype(np.float32)
            frames[f] = frames[f] * (1 - m) + rgb * m
    return frames


def render(text: str, rng: np.random.Generator, frames: int = FRAMES) -> np.ndarray:
    """A clip [frames, 32, 32, 3] in [0, 1] that matches the prompt."""
    scenes = parse_prompt(text)
    if len(scenes) == 1:
        return _draw_scene(scenes[0][1], rng, frames)
    cuts = sorted(rng.choice(np.arange(3, frames - 2), size=len(scenes) - 1, replace=False))
    bounds = [0, *cuts, frames]
    video = np.empty((frames, SIZE, SIZE, 3), dtype=np.float32)
    previous = None
    for (transition, shapes), a, b in zip(scenes, bounds, bounds[1:], strict=False):
        clip = _draw_scene(shapes, rng, b - a)
        if transition == "fade":  # three-frame cross-fade out of the previous scene's last frame
            for k in range(min(3, b - a)):
                w = (k + 1) / 4
                clip[k] = (1 - w) * previous + w * clip[k]
        video[a:b] = clip
        previous = video[b - 1]
    return video
