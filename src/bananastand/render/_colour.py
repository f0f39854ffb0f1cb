"""Colour: the palette a prompt asks for.

Colour words in the prompt ("orange cat" -> warm orange) pick the base hue, saturation and
lightness, tone words ("dark", "pastel", "neon") shift lightness and saturation, and the seeded
generator picks a colour scheme (analogous, complementary, triadic...) around them; prompts with
no colour word get a random base hue.  :func:`_palette` returns the sky, glow, shape, ground and
accent colours of one picture as a :class:`_Palette`.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Colour = tuple[float, float, float]  # RGB, 0..255

# word -> (hue degrees, saturation, lightness)
_COLOUR_WORDS: dict[str, tuple[float, float, float]] = {
    "red": (2, 0.75, 0.5),
    "crimson": (348, 0.8, 0.45),
    "scarlet": (5, 0.85, 0.5),
    "ruby": (340, 0.75, 0.4),
    "cherry": (350, 0.8, 0.45),
    "fire": (14, 0.9, 0.5),
    "lava": (8, 0.9, 0.45),
    "orange": (28, 0.9, 0.55),
    "amber": (40, 0.9, 0.5),
    "peach": (24, 0.8, 0.74),
    "coral": (12, 0.8, 0.62),
    "sunset": (18, 0.85, 0.55),
    "autumn": (26, 0.75, 0.45),
    "yellow": (52, 0.9, 0.55),
    "gold": (45, 0.85, 0.5),
    "golden": (45, 0.85, 0.5),
    "lemon": (55, 0.9, 0.6),
    "banana": (50, 0.9, 0.6),
    "sand": (40, 0.45, 0.72),
    "desert": (35, 0.55, 0.62),
    "beige": (38, 0.4, 0.78),
    "brown": (28, 0.5, 0.3),
    "chocolate": (22, 0.5, 0.25),
    "coffee": (25, 0.45, 0.28),
    "green": (120, 0.55, 0.42),
    "lime": (90, 0.75, 0.5),
    "olive": (70, 0.45, 0.35),
    "emerald": (145, 0.7, 0.4),
    "mint": (150, 0.5, 0.72),
    "forest": (130, 0.5, 0.3),
    "jungle": (125, 0.6, 0.32),
    "grass": (105, 0.6, 0.45),
    "teal": (178, 0.6, 0.38),
    "turquoise": (174, 0.7, 0.5),
    "cyan": (186, 0.8, 0.5),
    "aqua": (182, 0.75, 0.55),
    "blue": (218, 0.75, 0.5),
    "azure": (205, 0.8, 0.55),
    "sky": (204, 0.7, 0.68),
    "sea": (195, 0.65, 0.45),
    "ocean": (205, 0.7, 0.4),
    "sapphire": (220, 0.8, 0.4),
    "navy": (228, 0.7, 0.25),
    "ice": (195, 0.5, 0.85),
    "indigo": (250, 0.7, 0.35),
    "purple": (275, 0.6, 0.45),
    "violet": (265, 0.65, 0.55),
    "lavender": (260, 0.5, 0.78),
    "magenta": (305, 0.75, 0.5),
    "pink": (335, 0.7, 0.75),
    "rose": (345, 0.65, 0.6),
}
# word -> (lightness shift, saturation multiplier)
_TONE_WORDS: dict[str, tuple[float, float]] = {
    "dark": (-0.2, 1.0),
    "night": (-0.25, 0.9),
    "midnight": (-0.3, 0.9),
    "black": (-0.3, 0.7),
    "shadow": (-0.15, 0.8),
    "noir": (-0.25, 0.4),
    "bright": (0.12, 1.1),
    "light": (0.1, 0.9),
    "pale": (0.15, 0.6),
    "pastel": (0.18, 0.55),
    "white": (0.22, 0.45),
    "snow": (0.22, 0.4),
    "gray": (0.0, 0.3),
    "grey": (0.0, 0.3),
    "silver": (0.08, 0.25),
    "foggy": (0.08, 0.4),
    "misty": (0.08, 0.5),
    "vivid": (0.0, 1.3),
    "neon": (0.0, 1.4),
}
_SCHEMES: tuple[tuple[float, ...], ...] = (
    (0.0, 28.0, -28.0, 55.0),  # analogous
    (0.0, 180.0, 25.0, 200.0),  # complementary
    (0.0, 120.0, 240.0, 20.0),  # triadic
    (0.0, 150.0, 210.0, -20.0),  # split complementary
    (0.0, -35.0, 200.0, 35.0),  # analogous + accent
)


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())


def _lookup(word: str, table: Mapping[str, tuple[float, ...]]) -> tuple[float, ...] | None:
    if word in table:
        return table[word]
    if word.endswith("s") and word[:-1] in table:
        return table[word[:-1]]
    return None


def _hls(hue_deg: float, light: float, sat: float) -> Colour:
    r, g, b = colorsys.hls_to_rgb(
        (hue_deg % 360.0) / 360.0, min(max(light, 0.02), 0.97), min(max(sat, 0.0), 1.0)
    )
    return (r * 255.0, g * 255.0, b * 255.0)


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


@dataclass(frozen=True)
class _Palette:
    sky_top: Colour
    sky_bottom: Colour
    glow: Colour
    shapes: tuple[Colour, ...]
    ground: tuple[Colour, ...]  # far -> near
    accent: Colour
    night: bool


def _palette(prompt: str, rng: np.random.Generator) -> _Palette:
    words = _words(prompt)
    colours: list[tuple[float, ...]] = []
    shift, sat_mul = 0.0, 1.0
    for word in words:
        colour = _lookup(word, _COLOUR_WORDS)
        if colour is not None and colour not in colours:
            colours.append(colour)
        tone = _lookup(word, _TONE_WORDS)
        if tone is not None:
            shift += tone[0]
            sat_mul *= tone[1]
    shift = max(-0.35, min(0.3, shift))
    if colours:
        base_h, base_s, base_l = colours[0]
        base_h += float(rng.uniform(-12.0, 12.0))
        shift += 0.5 * (base_l - 0.5)
    else:
        base_h, base_s = float(rng.uniform(0.0, 360.0)), float(rng.uniform(0.45, 0.8))
    scheme = _SCHEMES[int(rng.integers(len(_SCHEMES)))]
    hues = [base_h + off + float(rng.uniform(-8.0, 8.0)) for off in scheme]
    for i, extra in enumerate(colours[1:4], start=1):
        hues[i] = extra[0] + float(rng.uniform(-8.0, 8.0))
    sat = min(1.0, base_s * sat_mul)
    night = shift < -0.12 or float(rng.random()) < 0.15

    def col(hue: float, light: float, s: float = 1.0) -> Colour:
        return _hls(hue, light + shift, sat * s)

    top_l = float(rng.uniform(0.12, 0.22)) if night else float(rng.uniform(0.36, 0.56))
    sky_top = col(hues[0] + float(rng.uniform(-10, 10)), top_l, 0.75)
    sky_bottom = col(hues[0] + float(rng.uniform(-30, 30)), top_l + float(rng.uniform(0.22, 0.36)))
    glow = col(hues[0] + float(rng.uniform(-20, 20)), 0.86 if not night else 0.78, 0.9)
    shapes = tuple(
        col(hues[i % len(hues)], float(rng.uniform(0.42, 0.74)), float(rng.uniform(0.7, 1.0)))
        for i in range(6)
    )
    n_ground = 4
    ground_hue = hues[int(rng.integers(1, len(hues)))] if rng.random() < 0.5 else hues[0]
    ground = tuple(
        _mix(
            col(ground_hue + 6.0 * i, 0.42 - 0.09 * i, 0.8),
            sky_bottom,
            0.45 * (n_ground - 1 - i) / (n_ground - 1),
        )
        for i in range(n_ground)
    )
    accent = col(hues[2] if len(hues) > 2 else hues[0] + 180.0, 0.8, 1.0)
    return _Palette(sky_top, sky_bottom, glow, shapes, ground, accent, night)
