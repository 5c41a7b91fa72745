"""Captions and questions about synthetic drawings, for the test base's image-text pre-training.

A real vision-language base learns to put what its vision tower sees into words
from image-text pairs before anyone fine-tunes it for a rubric. The tiny test base
gets the same kind of pre-training (train/pretrain.py) on synthetic drawings, with
texts made here from the facts of how each drawing was drawn
(`train.synth.render_drawing_details`): its colours and how many, how strongly they
stand out from the paper, its shapes and which are twisted into spiky bursts, their layout, the
stick figure and its parts, the head's size, the ink strokes and their kinds, the
joined blue pencil lines, and the fantastic motifs.

Every fact has several phrasings, numbers are written as words or digits, and a
caption states a random subset of the facts in a random order, as captions do.
Two kinds of pair: a request for a description answered by a caption, and a
focused question about one fact answered by that fact (so, as in VQA data, the
answer's first token already depends on the picture). The texts never name a
rubric dimension, a level or a score.
"""

from __future__ import annotations

import numpy as np

_NUMBER_WORDS = [
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_HUE_NAMES = [
    (0.04, "red"),
    (0.10, "orange"),
    (0.17, "yellow"),
    (0.25, "yellow-green"),
    (0.42, "green"),
    (0.52, "turquoise"),
    (0.64, "blue"),
    (0.74, "violet"),
    (0.86, "purple"),
    (0.95, "pink"),
    (1.01, "red"),
]
_CORNERS = ["top-left", "top-right", "bottom-left", "bottom-right"]
_MOTIF_NAMES = [("spiral", "spirals"), ("star", "stars"), ("floating eye", "floating eyes")]
_STYLE_WORDS = {"solid": "solid", "dashed": "dashed", "zigzag": "zigzag", "wavy": "thick wavy", "dotted": "dotted"}

DESCRIBE_QUESTIONS = (
    "Describe this drawing.",
    "What do you see in this picture?",
    "Tell me about this child's drawing.",
    "Write a caption for this picture.",
    "What is drawn here?",
)
FACT_QUESTIONS = {
    "colours": ("How many colours are used?", "Which colours do you see?", "Tell me about the colours."),
    "strength": ("How strongly do the colours stand out from the paper?", "Are the colours pale or bold?"),
    "shapes": ("What shapes are there?", "How many shapes are drawn, and of which kinds?"),
    "twisted": ("Are the shapes regular or twisted?", "How many shapes are spiky?"),
    "layout": ("How are the shapes arranged on the page?", "Where on the page are the shapes?"),
    "figure": ("What does the person look like?", "Describe the stick figure."),
    "head": ("How big is the person's head?", "Describe the size of the head."),
    "strokes": ("What kinds of ink lines are there?", "Describe the black lines."),
    "web": ("Describe the blue pencil lines.", "How many blue lines are joined together?"),
    "motifs": ("Are there any magic things in the sky?", "What strange things float in the picture?"),
}


def _number(rng: np.random.Generator, n: int) -> str:
    """A count as a word (most of the time) or digits."""
    if n < len(_NUMBER_WORDS) and rng.random() < 0.7:
        return _NUMBER_WORDS[n]
    return str(n)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def hue_name(hue: float) -> str:
    return next(name for bound, name in _HUE_NAMES if hue < bound)


def _fact_colours(rng, d) -> str:
    n = d["n_hues"]
    names = sorted({hue_name(h) for h in d["hues"]}, key=lambda x: [h for _, h in _HUE_NAMES].index(x))
    if n == 1:
        return _pick(
            rng,
            [
                f"The shapes are all painted in one colour, {names[0]}.",
                f"Only one colour is used: {names[0]}.",
                f"It is a one-colour picture in {names[0]}.",
            ],
        )
    count = _number(rng, n)
    return _pick(
        rng,
        [
            f"The shapes are painted in {count} colours: {_join(names)}.",
            f"There are {count} different colours.",
            f"It uses {count} colours, among them {_join(names[:3])}.",
            f"A palette of {count} colours.",
        ],
    )


def _fact_strength(rng, d) -> str:
    words = {
        0.22: ("very pale", "barely visible on the paper"),
        0.4: ("pale", "faint against the paper"),
        0.6: ("medium", "moderately clear on the paper"),
        0.8: ("strong", "clearly standing out from the paper"),
        1.0: ("bold, vivid", "standing out sharply from the paper"),
    }
    adjective, phrase = words[d["strength"]]
    return _pick(
        rng, [f"The colours are {adjective}.", f"The colours are {phrase}.", f"The shapes look {adjective}, {phrase}."]
    )


def _fact_shapes(rng, d) -> str:
    kinds = d["shape_kinds"]
    parts = [
        f"{_number(rng, c)} {name}{'s' if c != 1 else ''}"
        for name, c in (
            ("rectangle", kinds["rectangle"]),
            ("circle", kinds["circle"]),
            ("spiky burst", kinds["irregular"]),
        )
        if c
    ]
    total = _number(rng, d["n_shapes"])
    return _pick(
        rng,
        [
            f"There are {total} coloured shapes: {_join(parts)}.",
            f"The page has {_join(parts)}.",
            f"{total.capitalize()} shapes are drawn.",
        ],
    )


def _fact_twisted(rng, d) -> str:
    share = d["transformed_share"]
    if share == 0:
        return _pick(rng, ["All the shapes are neat rectangles and circles.", "None of the shapes is twisted."])
    if share == 1:
        return _pick(rng, ["Every shape is twisted into a spiky burst.", "All the shapes are bent into spikes."])
    n = d["shape_kinds"]["irregular"]
    word = {0.25: "a quarter", 0.5: "half", 0.75: "three quarters"}.get(round(share * 4) / 4, "some")
    return _pick(
        rng,
        [
            f"About {word} of the shapes are twisted into spiky bursts.",
            f"{_number(rng, n).capitalize()} of the {_number(rng, d['n_shapes'])} shapes {'is' if n == 1 else 'are'} "
            "spiky.",
        ],
    )


def _fact_layout(rng, d) -> str:
    spread = d["spread"]
    if d["corner"] is None:
        return _pick(
            rng,
            [
                "The shapes are spread evenly over the whole page in neat rows.",
                "The shapes fill the whole page in an even grid.",
            ],
        )
    corner = _CORNERS[d["corner"]]
    if spread <= 0.32:
        return _pick(
            rng,
            [
                f"The shapes are crowded into a small patch in the {corner} corner.",
                f"Everything is squeezed into the {corner} corner.",
            ],
        )
    if spread <= 0.45:
        return _pick(
            rng,
            [f"The shapes are bunched towards the {corner} corner.", f"The shapes cluster near the {corner} corner."],
        )
    if spread <= 0.6:
        return _pick(
            rng,
            [
                f"The shapes are scattered over part of the page, towards the {corner}.",
                f"The shapes cover about half of the page, on the {corner} side.",
            ],
        )
    return _pick(
        rng,
        [
            "The shapes are spread over most of the page in loose rows.",
            f"The shapes are spread widely in loose rows, leaning to the {corner}.",
        ],
    )


def _fact_figure(rng, d) -> str:
    parts = d["figure_parts"]
    texts = {
        1: ["The person is only a head.", "There is a head with no body."],
        2: ["The person is a head on a single line of body.", "A head and a body, with no arms or legs."],
        3: ["A stick figure with a head, a body, arms and legs.", "The person has a head, body, arms and legs."],
        4: ["A stick figure with a face, arms, legs, hands and feet.", "The person has eyes, a smile, hands and feet."],
        5: [
            "A full stick figure with a face, hands and feet, wearing a grey shirt and standing on the ground.",
            "The person wears a grey shirt, has a face, hands and feet, and stands on a brown ground line.",
        ],
    }[parts]
    return _pick(rng, texts)


def _fact_head(rng, d) -> str:
    scale = d["head_scale"]
    if scale <= 1.0:
        return _pick(rng, ["The head is a normal size for the body.", "The head is small and in proportion."])
    if scale <= 1.4:
        return _pick(rng, ["The head is a little too big.", "The head is slightly large."])
    if scale <= 1.9:
        return _pick(rng, ["The head is big compared with the body.", "The person has a large head."])
    if scale <= 2.5:
        return _pick(rng, ["The head is very big and the limbs are stretched.", "A very large head sits on the body."])
    return _pick(rng, ["The head is huge, far too big for the body.", "An enormous head dwarfs the stretched body."])


def _fact_strokes(rng, d) -> str:
    kinds = [_STYLE_WORDS[s] for s in d["styles"]]
    n = _number(rng, d["n_strokes"])
    if len(kinds) == 1:
        return _pick(rng, [f"There are {n} ink lines, all {kinds[0]}.", f"All the black lines are {kinds[0]}."])
    k = _number(rng, len(kinds))
    return _pick(
        rng,
        [
            f"There are {n} ink lines of {k} kinds: {_join(kinds)}.",
            f"The black lines are {_join(kinds)}.",
            f"{k.capitalize()} kinds of black line appear: {_join(kinds)}.",
        ],
    )


def _fact_web(rng, d) -> str:
    n = d["n_segments"]
    if n == 1:
        return _pick(rng, ["There is a single short blue pencil line.", "One lone blue line."])
    count = _number(rng, n)
    return _pick(
        rng,
        [
            f"A web of {count} joined blue pencil lines.",
            f"{count.capitalize()} blue lines are joined into a web.",
            f"The blue pencil draws {count} connected strokes.",
        ],
    )


def _fact_motifs(rng, d) -> str:
    kinds = d["motif_kinds"]
    if not kinds:
        return _pick(rng, ["There are no magic things in the sky.", "Nothing strange floats in the picture."])
    counts = [kinds.count(k) for k in range(3)]
    parts = [f"{_number(rng, c)} {_MOTIF_NAMES[k][c != 1]}" for k, c in enumerate(counts) if c]
    total = _number(rng, len(kinds))
    return _pick(
        rng,
        [
            f"There are {total} magic things: {_join(parts)}.",
            f"{_join(parts).capitalize()} float in the sky.",
            f"{total.capitalize()} fantastic things appear.",
        ],
    )


def _short_colours(rng, d) -> str:
    names = sorted({hue_name(h) for h in d["hues"]}, key=lambda x: [h for _, h in _HUE_NAMES].index(x))
    n = _number(rng, d["n_hues"])
    return _pick(
        rng,
        [
            f"{n.capitalize()}.",
            f"{n.capitalize()}: {_join(names)}.",
            f"{n.capitalize()} colour{'s' if d['n_hues'] != 1 else ''}.",
        ],
    )


def _short_strength(rng, d) -> str:
    return {0.22: "Very pale.", 0.4: "Pale.", 0.6: "Medium.", 0.8: "Strong.", 1.0: "Bold and vivid."}[d["strength"]]


def _short_shapes(rng, d) -> str:
    return f"{_number(rng, d['n_shapes']).capitalize()}."


def _short_twisted(rng, d) -> str:
    share = d["transformed_share"]
    if share == 0:
        return "None of them."
    if share == 1:
        return "All of them."
    return {0.25: "About a quarter.", 0.5: "About half.", 0.75: "About three quarters."}.get(
        round(share * 4) / 4, "Some."
    )


def _short_layout(rng, d) -> str:
    if d["corner"] is None:
        return "Evenly over the whole page."
    corner = _CORNERS[d["corner"]]
    return {
        0.32: f"Crowded in the {corner} corner.",
        0.45: f"Bunched near the {corner} corner.",
        0.6: f"Over part of the page, {corner}.",
        0.8: "Over most of the page.",
    }[d["spread"]]


def _short_figure(rng, d) -> str:
    return {
        1: "Only a head.",
        2: "A head and a body.",
        3: "Head, body, arms and legs.",
        4: "Face, hands and feet too.",
        5: "A full figure in a grey shirt on the ground.",
    }[d["figure_parts"]]


def _short_head(rng, d) -> str:
    return {1.0: "Normal.", 1.4: "A little big.", 1.9: "Big.", 2.5: "Very big.", 3.2: "Huge."}[d["head_scale"]]


def _short_strokes(rng, d) -> str:
    kinds = [_STYLE_WORDS[s] for s in d["styles"]]
    k = _number(rng, len(kinds))
    return _pick(rng, [f"{k.capitalize()} kind{'s' if len(kinds) != 1 else ''}.", f"{k.capitalize()}: {_join(kinds)}."])


def _short_web(rng, d) -> str:
    n = d["n_segments"]
    return "One line." if n == 1 else f"{_number(rng, n).capitalize()} joined lines."


def _short_motifs(rng, d) -> str:
    n = len(d["motif_kinds"])
    return "None." if n == 0 else f"{_number(rng, n).capitalize()}."


# Short answers lead with the word that depends on the picture, as VQA answers do: they
# cannot be predicted from the question alone, so the model must look (with captions only,
# whose tokens are mostly predictable from their phrasing, the test base learnt to ignore
# the image: identical answers for every drawing).
SHORT_FACTS = {
    "colours": _short_colours,
    "strength": _short_strength,
    "shapes": _short_shapes,
    "twisted": _short_twisted,
    "layout": _short_layout,
    "figure": _short_figure,
    "head": _short_head,
    "strokes": _short_strokes,
    "web": _short_web,
    "motifs": _short_motifs,
}


FACTS = {
    "colours": _fact_colours,
    "strength": _fact_strength,
    "shapes": _fact_shapes,
    "twisted": _fact_twisted,
    "layout": _fact_layout,
    "figure": _fact_figure,
    "head": _fact_head,
    "strokes": _fact_strokes,
    "web": _fact_web,
    "motifs": _fact_motifs,
}


def caption(rng: np.random.Generator, details: dict, min_facts: int = 2, max_facts: int = 6) -> str:
    """A caption: a random subset of the drawing's facts, in random order, each in a random phrasing."""
    names = list(FACTS)
    k = int(rng.integers(min_facts, min(max_facts, len(names)) + 1))
    chosen = [names[i] for i in rng.permutation(len(names))[:k]]
    opener = _pick(rng, ["A child's drawing.", "A drawing on cream paper.", "", ""])
    sentences = [FACTS[name](rng, details) for name in chosen]
    return " ".join(s for s in [opener, *sentences] if s)


DENSE_LABELS = {
    "colours": "colours",
    "strength": "against the paper",
    "shapes": "shapes",
    "twisted": "twisted shapes",
    "layout": "layout",
    "figure": "person",
    "head": "head",
    "strokes": "ink lines",
    "web": "blue lines",
    "motifs": "magic things",
}
LIST_QUESTIONS = ("List what you see.", "Give the facts of this drawing.", "Make a list of what is drawn.")


def dense_caption(rng: np.random.Generator, details: dict) -> str:
    """Every fact, briefly, behind a short label, in a fixed order: nearly every token depends on the picture
    (a fixed order keeps the list's own structure predictable, so the loss is about what is drawn)."""
    names = list(SHORT_FACTS)
    return "; ".join(f"{DENSE_LABELS[n]}: {SHORT_FACTS[n](rng, details).rstrip('.').lower()}" for n in names) + "."


def training_pair(
    rng: np.random.Generator,
    details: dict,
    focused_share: float = 0.35,
    dense_share: float = 0.55,
    short_share: float = 0.7,
) -> tuple[str, str]:
    """(question, answer) for one drawing: a focused question about one fact (answered briefly or in a
    sentence), a request for the list of facts (dense caption), or a request for a caption."""
    draw = rng.random()
    if draw < focused_share:
        name = _pick(rng, list(FACTS))
        answer = SHORT_FACTS[name](rng, details) if rng.random() < short_share else FACTS[name](rng, details)
        return _pick(rng, FACT_QUESTIONS[name]), answer
    if draw < focused_share + dense_share:
        return _pick(rng, LIST_QUESTIONS), dense_caption(rng, details)
    return _pick(rng, DESCRIBE_QUESTIONS), caption(rng, details)
