"""Reference backend: transformers + PEFT, one adapter at a time, one image at a time.

This is how the KidsArtBench research code scores: load the base, attach the
adapters with PEFT, switch adapter per dimension, run a forward pass per image and
read the score-token logits. It is the correctness oracle for the vLLM fast path
(same prompt format, same pixels, same RAIL function) and the baseline for benchmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from adapters.calibration import with_interval
from adapters.feedback import FEEDBACK_MODULE, require_feedback_adapter
from adapters.hf_scoring import ScoringProcessor, generate_text, score_token_logits
from adapters.images import decode_image
from adapters.manifest import Deployment, load_profile_deployment
from adapters.profiles import Profile
from adapters.rail import expected_score

log = logging.getLogger(__name__)


class ReferenceBackend:
    """Scores images with transformers + PEFT; output matches the router's `scores` object."""

    def __init__(self, profile: Profile, deployment: Deployment | None = None, *, base_dir: Path | None = None):
        import torch
        from peft import PeftModel
        from transformers import Qwen2_5_VLForConditionalGeneration

        self.profile = profile
        self.deployment = deployment or load_profile_deployment(profile)
        self.rubric = self.deployment.rubric
        dtype = getattr(torch, profile.resolved_dtype)
        base_dir = Path(base_dir or profile.base.resolved_path)
        self.scoring = ScoringProcessor.load(base_dir, self.rubric, profile.image_size, self.deployment.prompt_format)
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=dtype)
        dims = self.deployment.dimensions
        first = self.deployment.adapters[dims[0]]
        model = PeftModel.from_pretrained(base, first.path, adapter_name=dims[0])
        for dim in dims[1:]:
            model.load_adapter(self.deployment.adapters[dim].path, adapter_name=dim)
        if self.deployment.feedback is not None:
            model.load_adapter(self.deployment.feedback.path, adapter_name=FEEDBACK_MODULE)
        # A GPU profile's reference runs on its GPU (as the research code does); CPU otherwise.
        self.device = "cuda" if profile.engine.device == "cuda" and torch.cuda.is_available() else "cpu"
        self.model = model.eval().to(self.device)
        self._torch = torch

    def score_image(self, image, dimensions: list[str] | None = None, description: str | None = None) -> dict:
        """Scores for one prepared PIL image (`self.scoring.prepare`) on the chosen dimensions (all by default)."""
        selected = self.rubric.select(dimensions)
        scores = {}
        for dim in selected:
            adapter = self.deployment.adapters.get(dim.name)
            if adapter is None:
                from adapters.errors import UnknownDimensionError

                raise UnknownDimensionError(f"no adapter is deployed for dimension {dim.name!r}")
            self.model.set_adapter(dim.name)
            inputs = self.scoring.batch_inputs(self.rubric, dim, [image], [description]).to(self.device)
            with self._torch.no_grad():
                logits = score_token_logits(self.model, inputs, self.scoring.score_token_ids)
            probs, mean, std = expected_score(logits.double().cpu()[0], self.rubric.levels)
            entry = {
                "score": float(mean),
                "probs": [float(p) for p in probs],
                "std": float(std),
                "adapter": adapter.manifest.label,
            }
            scores[dim.name] = with_interval(dim.name, entry, self.deployment.calibration, self.rubric.levels)
        return scores

    def check_feedback(self) -> None:
        require_feedback_adapter(
            self.deployment.feedback is not None, f"deployment {self.deployment.name!r} ({self.deployment.source})"
        )

    def feedback_texts(
        self,
        images: list,
        scores: list[dict[str, float]],
        descriptions: list[str | None] | None = None,
        *,
        untrained: bool = False,
    ) -> list[str]:
        """Comments for prepared images and their scores (dimension -> score), batched; `untrained`: the base
        with the LoRA switched off, i.e. what a freshly initialised (B = 0) feedback adapter writes."""
        self.check_feedback()
        self.model.set_adapter(FEEDBACK_MODULE)
        inputs = self.scoring.feedback_inputs(self.rubric, scores, images, descriptions).to(self.device)
        with self._torch.no_grad():
            if untrained:
                with self.model.disable_adapter():
                    return generate_text(self.model, self.scoring.processor, inputs, self.profile.feedback)
            return generate_text(self.model, self.scoring.processor, inputs, self.profile.feedback)

    def feedback(self, image, scores: dict, description: str | None = None) -> dict:
        """The router's `feedback` object for one prepared image and its `scores` entries."""
        text = self.feedback_texts([image], [{d: e["score"] for d, e in scores.items()}], [description])[0]
        return {"text": text, "adapter": self.deployment.feedback.manifest.label}

    def _prepare_bytes(self, data: bytes):
        router = self.profile.router
        return self.scoring.prepare(
            decode_image(data, max_bytes=router.max_image_bytes, max_pixels=router.max_image_pixels)
        )

    def score_bytes(self, data: bytes, dimensions: list[str] | None = None, description: str | None = None) -> dict:
        return self.score_image(self._prepare_bytes(data), dimensions, description)

    def score_with_feedback(
        self, data: bytes, dimensions: list[str] | None = None, description: str | None = None
    ) -> tuple[dict, dict]:
        """(scores, feedback) for image bytes; refused before any work when no feedback adapter is deployed."""
        self.check_feedback()
        image = self._prepare_bytes(data)
        scores = self.score_image(image, dimensions, description)
        return scores, self.feedback(image, scores, description)

    def score_path(self, path: Path, dimensions: list[str] | None = None, description: str | None = None) -> dict:
        return self.score_bytes(Path(path).read_bytes(), dimensions, description)
