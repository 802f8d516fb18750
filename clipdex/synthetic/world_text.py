"""Words for the generated world (:mod:`.world`): captions from templates with synonyms and word-order variants,
long descriptions (100-250 tokens) that name every object and attribute, and prompts for class names.

``caption(scene, rng)`` -> "a small red circle on the left", "a blue star and a green square on a striped
background", ...; ``description(scene, rng)`` -> several sentences per object; ``class_prompt(name, rng)`` ->
"a photo of a circle." (the zero-shot templates, so that classification prompts are words the model knows).
"""
from __future__ import annotations

import random

POSITION_WORDS = {"left": ("on the left", "at the left", "on the left side"),
                  "right": ("on the right", "at the right", "on the right side"),
                  "top": ("at the top", "on the top", "near the top", "in the upper part"),
                  "bottom": ("at the bottom", "near the bottom", "in the lower part"),
                  "center": ("in the center", "in the middle", "at the center")}
BACKGROUND_WORDS = {"plain": ("on a plain background", "on a plain backdrop"),
                    "stripes": ("on a striped background", "on stripes", "on a background of stripes"),
                    "noise": ("on a noisy background", "on a grainy background"),
                    "gradient": ("on a gradient background", "on a smooth gradient")}
COLOR_SYNONYMS = {"gray": ("gray", "grey")}
PREFIXES = ("", "", "", "a photo of ", "a drawing of ", "a picture of ", "an image of ", "a sketch of ",
            "a rendering of ", "there is ", "this shows ")
# the zero-shot template sets' own words (open_clip's simple7 and a few of openai80), for class-name prompts
CLASS_TEMPLATES = ("a photo of a {}.", "itap of a {}.", "a bad photo of the {}.", "a origami {}.",
                   "a photo of the large {}.", "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
                   "a drawing of a {}.", "a {}.", "a photo of the {}.", "a sketch of a {}.", "a rendering of a {}.",
                   "a cropped photo of the {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
                   "a good photo of the {}.", "a photo of one {}.", "a low resolution photo of the {}.",
                   "a pixelated photo of the {}.", "a blurry photo of a {}.", "a plastic {}.", "a toy {}.",
                   "graffiti of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "{}")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
_CORNERS = {"circle": "no corners at all", "square": "four equal sides and four corners",
            "triangle": "three sides and three corners", "star": "five points",
            "hexagon": "six sides and six corners", "heart": "two rounded lobes and a point",
            "cross": "four arms of equal length", "diamond": "four corners, taller than it is wide"}


def _color(name: str, rng: random.Random) -> str:
    return rng.choice(COLOR_SYNONYMS.get(name, (name,)))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(o: dict, rng: random.Random, full: bool = False, with_position: bool | None = None) -> str:
    """A noun phrase for object ``o``: colour and shape always (unless dropped for variety), size, style and
    position sometimes (always with ``full``)."""
    keep_color = full or rng.random() > 0.12
    keep_shape = full or not keep_color or rng.random() > 0.08
    words = []
    if full or rng.random() < 0.35:
        words.append(o["size"])
    style_first = rng.random() < 0.5
    if (full or rng.random() < 0.3) and o["style"] == "outline" and style_first:
        words.append(rng.choice(("outlined", "hollow")))
    if (full or rng.random() < 0.2) and o["style"] == "filled" and style_first:
        words.append(rng.choice(("filled", "solid")))
    if keep_color:
        words.append(_color(o["color"], rng))
    words.append(o["shape"] if keep_shape else rng.choice(("shape", "object", "thing")))
    phrase = " ".join(words)
    if not style_first and (full or rng.random() < 0.3):
        phrase += " outline" if o["style"] == "outline" else rng.choice((" filled in", " filled with colour"))
    if rng.random() < 0.1 and keep_color and keep_shape and not full:  # word-order variant
        phrase = f"{o['shape']} that is {_color(o['color'], rng)}"
    pos = with_position if with_position is not None else (full or rng.random() < 0.45)
    if pos:
        phrase += " " + rng.choice(POSITION_WORDS[o["position"]])
    return f"{_article(phrase)} {phrase}"


def caption(scene: dict, rng: random.Random) -> str:
    """A short caption of a scene, from templates with synonyms and word-order variants."""
    objs = list(scene["objects"])
    rng.shuffle(objs)
    if len(objs) > 1 and rng.random() < 0.2:  # name only some of several objects ("... and more")
        objs = objs[:-1]
    positions = rng.random() < 0.45 and len(objs) > 1
    phrases = [object_phrase(o, rng, with_position=positions or None) for o in objs]
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if rng.random() < 0.2 and len(scene["objects"]) > 1:
        text = f"{NUMBER_WORDS[len(scene['objects'])]} shapes: {text}"
    if rng.random() < 0.3:
        text += " " + rng.choice(BACKGROUND_WORDS[scene["background"]["kind"]])
    return (rng.choice(PREFIXES) + text).strip()


def _object_sentences(o: dict, ordinal: str, rng: random.Random) -> list[str]:
    color = _color(o["color"], rng)
    style = ("it is only an outline, drawn with a line in " + color + " and empty inside"
             if o["style"] == "outline" else "it is filled with solid " + color + " colour")
    where = rng.choice(POSITION_WORDS[o["position"]])
    out = [f"The {ordinal} object is {object_phrase(o, rng, full=True, with_position=False)}.",
           f"This {color} {o['shape']} sits {where} of the picture, and it is {o['size']}.",
           f"The {o['shape']} has {_CORNERS[o['shape']]}, and {style}."]
    if rng.random() < 0.6:
        out.append(f"Nothing else in the picture is a {color} {o['shape']}.")
    return out


def description(scene: dict, rng: random.Random) -> str:
    """A long description (roughly 100-250 tokens) that names every object with all its attributes, in order."""
    objs = scene["objects"]
    bg = scene["background"]
    n = len(objs)
    head = [f"This picture shows {NUMBER_WORDS[n]} shape{'s' if n > 1 else ''} "
            f"{rng.choice(BACKGROUND_WORDS[bg['kind']])}."]
    if rng.random() < 0.5:
        head.append(f"The background is {bg['kind'] if bg['kind'] != 'noise' else 'noisy'} and fills the whole "
                    "picture behind the shapes.")
    body = []
    for o, ordinal in zip(objs, ("first", "second", "third")):
        body += _object_sentences(o, ordinal, rng)
    tail = ["In short: " + " and ".join(object_phrase(o, rng, with_position=True) for o in objs) + "."]
    if n == 1 and rng.random() < 0.7:
        tail.append(f"There is only this one {_color(objs[0]['color'], rng)} {objs[0]['shape']} and no other shape.")
    return " ".join(head + body + tail)


def class_prompt(name: str, rng: random.Random) -> str:
    """A class name in one of the zero-shot templates ("a photo of a circle.")."""
    return rng.choice(CLASS_TEMPLATES).format(name)


def color_prompt(color: str, rng: random.Random) -> str:
    """A colour-only phrase ("a red shape", "something red")."""
    c = _color(color, rng)
    return rng.choice((f"a {c} shape", f"something {c}", f"a {c} object", f"a photo of a {c} shape.",
                       f"the colour {c}", c))


def training_text(scene: dict, rng: random.Random) -> str:
    """A short text paired with a scene in training: mostly a caption, sometimes a class-name prompt or a colour
    phrase (those two only for single-object scenes, where they are unambiguous). Long descriptions are paired in
    batches of their own (:func:`description`)."""
    u = rng.random()
    single = len(scene["objects"]) == 1
    if single and u < 0.25:
        return class_prompt(scene["objects"][0]["shape"], rng)
    if single and u < 0.33:
        return color_prompt(scene["objects"][0]["color"], rng)
    return caption(scene, rng)
