"""The demo model's prompt language: its words, the parser of well-formed prompts and the tokenizer.

A prompt is  scene ((";" "then" | ";" "fade to") scene)*,  scene = shape ("and" shape)*,
shape = "a <colour> <kind> <motion>" (or "an ..."). The demo model was trained on clips drawn from
such prompts (tools/demo_clips.py renders them). `prompt_tokens` is what the prompt encoder embeds
and accepts any text; `parse_prompt` accepts only the grammar and says what is wrong otherwise.
The order of each word list is part of the training data (tools/demo_clips.py draws from them).
"""
from __future__ import annotations

import re

COLOURS = ("red", "green", "blue", "yellow", "white", "cyan", "magenta", "orange")
KINDS = ("circle", "square", "triangle")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "falls", "bounces", "stays")
ARTICLES = ("a", "an")   # "an" is read as "a"
AND = "and"              # joins shapes within a scene
SCENE_BREAK = ";"        # separates scenes; each later scene starts with a transition word
TRANSITIONS = {"then": "cut", "fade to": "fade"}
EXAMPLE = "a red circle moves right; then a blue square falls"


def prompt_tokens(text: str) -> list[tuple[str, int, int]]:
    """(word, scene, shape) per token: scenes split at ';', shapes within a scene at 'and'. Any text."""
    tokens = []
    for scene, part in enumerate(p for p in text.lower().split(SCENE_BREAK) if p.strip()):
        shape = 0
        for word in re.findall(r"[a-z0-9]+", part):
            if word == AND:
                shape += 1
            tokens.append((ARTICLES[0] if word in ARTICLES else word, scene, shape))
    return tokens


def _transition(part: str, index: int) -> tuple[str | None, str]:
    """(transition kind, the rest of the scene) of scene `index` (the first has none)."""
    if not index:
        return None, part
    for word, kind in TRANSITIONS.items():
        if part.startswith(word + " "):
            return kind, part[len(word) + 1:]
    raise ValueError(f"scene {index + 1} must start with {' or '.join(repr(w) for w in TRANSITIONS)}: {part!r}")


def _shape(clause: str) -> tuple[str, str, str]:
    words = clause.split()
    motion = " ".join(words[3:])
    if len(words) < 4 or words[0] not in ARTICLES or words[1] not in COLOURS or words[2] not in KINDS or motion not in MOTIONS:
        raise ValueError(f"not 'a <colour> <kind> <motion>': {clause!r}")
    return words[1], words[2], motion


def parse_prompt(text: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """[(transition into the scene or None, [(colour, kind, motion), ...]), ...]; raises ValueError on other text."""
    scenes = []
    for i, part in enumerate(p.strip() for p in text.lower().split(SCENE_BREAK)):
        transition, part = _transition(part, i)
        scenes.append((transition, [_shape(clause) for clause in part.split(f" {AND} ")]))
    return scenes


def _motions_text() -> str:
    """'moves left/right/up/down, falls, bounces, stays': motions sharing a verb written once."""
    groups: dict[str, list[str]] = {}
    for motion in MOTIONS:
        verb, _, rest = motion.partition(" ")
        groups.setdefault(verb, []).append(rest)
    return ", ".join(verb + (" " + "/".join(rest) if any(rest) else "") for verb, rest in groups.items())


def grammar_help() -> str:
    """The grammar and vocabulary in a sentence or three (the prompt node's tooltip)."""
    cut, fade = (f"'{SCENE_BREAK} {word}'" for word in TRANSITIONS)
    return (f"'a <colour> <shape> <motion>', shapes joined by '{AND}', scenes by {cut} (cut) or {fade}. "
            f"Colours: {' '.join(COLOURS)}; shapes: {' '.join(KINDS)}; motions: {_motions_text()}. "
            "Leave empty for the negative prompt.")
