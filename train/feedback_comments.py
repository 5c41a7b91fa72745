"""Reference comments for synthetic drawings, in a teacher's voice, from a grammar.

KidsArtBench pairs each artwork with expert comments; its public annotations here
have none, so `kidsart synth` writes ours: one comment per image made from its
labels and the facts of how it was drawn (`train.synth`, `train.captions`). Every
comment has four parts, each with several phrasings picked by a seeded generator:

1. what the artwork shows (its figure and shapes),
2. one strength: the dimension with the highest label (ties in rubric order), named
   by its rubric title, with the drawing fact behind it,
3. one thing to work on: the dimension with the lowest label, named and explained
   the same way,
4. one concrete next step for that dimension.

The strength is always named before the weakness and no other sentence names a
dimension, so `adapters.feedback.named_strength_and_weakness` can read back which
dimensions a (generated) comment picked. The choice follows
`adapters.feedback.ranked_scores`: the top and the bottom of the list the
feedback prompt shows. The facts are synthetic drawing rules, not art judgement.
"""

from __future__ import annotations

import numpy as np

from adapters.feedback import ranked_scores
from adapters.rubric import Rubric
from train.captions import FACTS, _number, _pick

# Which drawing fact (train.captions.FACTS) explains each KidsArtBench dimension's label (train.synth's table).
FACT_OF = {
    "realism": "figure",
    "deformation": "head",
    "imagination": "motifs",
    "color_richness": "colours",
    "color_contrast": "strength",
    "line_combination": "web",
    "line_texture": "strokes",
    "picture_organization": "layout",
    "transformation": "twisted",
}

NEXT_STEPS = {
    "realism": (
        "draw the whole person: a body, arms and legs, a face, hands and feet",
        "add the missing parts of your person, like hands, feet and a face",
        "give your person a shirt and a ground to stand on",
    ),
    "deformation": (
        "make one part bigger on purpose, like a huge head, to show a feeling",
        "stretch the arms and legs or grow the head to tell us something about the person",
    ),
    "imagination": (
        "add something magic to the sky, like stars, spirals or a floating eye",
        "invent a few fantastic things that could only be in your world",
    ),
    "color_richness": (
        "use more colours from all around the colour wheel",
        "add three or four new colours to your shapes",
    ),
    "color_contrast": (
        "press harder or pick bolder colours so the shapes stand out from the paper",
        "choose strong colours that really show up against the paper",
    ),
    "line_combination": (
        "join more blue pencil lines together into a web",
        "connect your lines so they build a bigger shape",
    ),
    "line_texture": (
        "try new kinds of lines: dashed, zigzag, wavy or dotted",
        "mix different lines, some dashed, some wavy, some dotted",
    ),
    "picture_organization": (
        "spread your shapes over the whole page instead of one corner",
        "plan where each shape goes so the whole page is used",
    ),
    "transformation": (
        "twist some of your shapes into spiky bursts",
        "change a few plain shapes into new, surprising forms",
    ),
}

_OPENERS = ("This drawing shows {what}.", "In this picture I can see {what}.", "You have drawn {what}.")
# Every phrasing says whether it praises or asks for work BEFORE it names the dimension: at the title
# the writer (the adapter) already knows which of the prompt's two names to copy. With half the
# phrasings naming first ("{Title} is a real strength here"), the test base's adapter named one
# dimension as the strength for nearly every image (grounded_strength 0.08, grounded_weakness 0.54).
_STRENGTHS = (
    "The strongest part of this work is your {title}.",
    "A real strength here is your {title}.",
    "I really like your {title}.",
    "The best thing about this drawing is its {title}.",
)
_WEAKNESSES = (
    "The part to work on is {title}.",
    "Where you can grow the most is your {title}.",
    "What needs the most attention is your {title}.",
    "Let us work on {title} together.",
)
_STEPS = ("Next time, {step}.", "As a next step, {step}.", "Try this: {step}.")
_FIGURE = {
    1: "a head",
    2: "a head and a body",
    3: "a stick figure",
    4: "a stick figure with a face",
    5: "a person in a grey shirt",
}


def _fill(template: str, title: str) -> str:
    return template.format(title=title)


def _what(rng: np.random.Generator, details: dict) -> str:
    shapes = f"{_number(rng, details['n_shapes'])} coloured shape{'s' if details['n_shapes'] != 1 else ''}"
    return f"{_FIGURE[details['figure_parts']]} and {shapes}"


def reference_comment(
    seed: int, labels: dict[str, int], details: dict, rubric: Rubric, source_of: dict[str, str]
) -> str:
    """The comment for one drawing: `labels` by the rubric's dimensions, `source_of` maps each to the
    KidsArtBench dimension whose drawing parameter it is read from (train.synth.RUBRIC_LABELS)."""
    rng = np.random.default_rng([20261202, int(seed)])
    ranked = ranked_scores(rubric, labels)
    strength, weakness = ranked[0][0], ranked[-1][0]
    parts = [
        _pick(rng, _OPENERS).format(what=_what(rng, details)),
        _fill(_pick(rng, _STRENGTHS), rubric.dimension(strength).title),
        FACTS[FACT_OF[source_of[strength]]](rng, details),
        _fill(_pick(rng, _WEAKNESSES), rubric.dimension(weakness).title),
        FACTS[FACT_OF[source_of[weakness]]](rng, details),
        _pick(rng, _STEPS).format(step=_pick(rng, NEXT_STEPS[source_of[weakness]])),
    ]
    return " ".join(parts)
