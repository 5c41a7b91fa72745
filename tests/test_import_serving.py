"""Published-layout adapters, imported and served by the real stack, score as their own inference does.

The oracle below is a re-implementation of the published KidsArtBench inference
procedure, written from its description and independent of our prompt-format and
image code: transformers + PEFT, one dimension at a time, the adapter loaded from
the *source* folder (`dimension_<dim>/best_model`), one user turn (the image, then
their sentence) with no system message, `qwen_vl_utils.process_vision_info`, their
letter-box to 224, and the expected value over the softmax of the "1".."5" logits
at the next position. The router's scores must match within 0.001 on images that
were not used to make the adapters.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from adapters.rubric import load_rubric
from tests.conftest import drawing, own_stack, png_bytes
from tests.kidsartbench_release import fabricate, their_prompt

pytestmark = [pytest.mark.integration, pytest.mark.own_ray]

DIMS = load_rubric("kidsartbench").dimension_names  # the nine, in the rubric's order
OLD_KEYS = ("realism", "line_texture")  # saved in the older transformers' key spelling


def _their_image(path):
    from PIL import Image
    from qwen_vl_utils import process_vision_info

    images, _ = process_vision_info([{"role": "user", "content": [{"type": "image", "image": str(path)}]}])
    image = images[0]
    ratio = min(224 / image.width, 224 / image.height)
    size = (int(image.width * ratio), int(image.height * ratio))
    canvas = Image.new("RGB", (224, 224), (128, 128, 128))
    canvas.paste(image.resize(size, Image.BICUBIC), ((224 - size[0]) // 2, (224 - size[1]) // 2))
    return canvas


def _their_adapter(base, folder, old_spelling: bool):
    """PeftModel.from_pretrained as they call it; an adapter saved by an older transformers (keys
    `model.layers.`) is read with that version's module names, i.e. respelled for this one."""
    import torch
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    model = PeftModel.from_pretrained(base, folder)
    if old_spelling:
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        respelled = {
            k.replace("base_model.model.model.layers.", "base_model.model.model.language_model.layers."): v
            for k, v in tensors.items()
        }
        result = set_peft_model_state_dict(model, respelled)
        assert not [k for k in result.unexpected_keys if "lora" in k]
    return model.eval().to(torch.float32)


def their_scores(base_dir, release, images: list, dims: list[str], checkpoint: str = "best_model") -> dict:
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(base_dir)
    ids = [processor.tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 6)]
    scores = {path.name: {} for path in images}
    for dim in dims:
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
        folder = release / f"dimension_{dim}" / (checkpoint if checkpoint == "best_model" else "")
        model = _their_adapter(base, folder, dim in OLD_KEYS)
        for path in images:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": their_prompt(dim)}],
                }
            ]
            text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            inputs = processor(text=[text], images=[_their_image(path)], return_tensors="pt")
            with torch.no_grad():
                logits = model(**inputs).logits[0, -1]
            probs = torch.softmax(logits[ids].double(), dim=-1)
            scores[path.name][dim] = float((probs * torch.arange(1, 6, dtype=torch.float64)).sum())
    return scores


def _district_run(url: str, tmp_path):
    import pandas as pd

    from tests.district_helpers import run

    for i in range(6):  # school/grade/class/student.png
        folder = tmp_path / "district" / "north" / f"grade {1 + i % 2}" / "class a"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"student {i}.png").write_bytes(png_bytes(drawing(9200 + i, size=(260, 180))))
    result = run([str(tmp_path / "district"), "--out", str(tmp_path / "district-out"), "--url", url, "--no-progress"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "district-out" / "report.html").stat().st_size > 0
    return pd.read_csv(tmp_path / "district-out" / "scores.csv")


@pytest.fixture(scope="module")
def imported(tiny_profile, tmp_path_factory):
    from adapters.importer import import_adapters

    root = tmp_path_factory.mktemp("release-serving")
    release = fabricate(tiny_profile.base.resolved_path, root / "release", DIMS, seed=7_340_001, old_keys=OLD_KEYS)
    deployment = import_adapters(release, layout="kidsartbench", profile=tiny_profile, out=root / "imported")
    return release, deployment


def test_imported_release_served_by_the_router_matches_their_inference(imported, tiny_profile, tmp_path):
    from adapters.profiles import load_profile

    release, deployment = imported
    images = []
    for i, (seed, size, kind) in enumerate(
        [(9101, (300, 200), "PNG"), (9102, (211, 397), "JPEG"), (9103, (640, 480), "PNG"), (9104, (97, 150), "JPEG")]
    ):
        path = tmp_path / f"art{i}.{kind.lower()}"
        path.write_bytes(png_bytes(drawing(seed, size=size), kind))
        images.append(path)
    profile = load_profile("tiny", deployment)
    with own_stack(profile, tmp_path / "logs") as stack:
        served = {}
        for path in images:
            response = httpx.post(
                f"{stack.url}/v1/score", json={"image": base64.b64encode(path.read_bytes()).decode()}, timeout=120
            )
            assert response.status_code == 200, response.text
            served[path.name] = response.json()["scores"]
        district_csv = _district_run(stack.url, tmp_path)
    expected = their_scores(tiny_profile.base.resolved_path, release, images, DIMS)
    worst = 0.0
    for name, by_dim in expected.items():
        for dim, score in by_dim.items():
            assert served[name][dim]["adapter"].startswith(f"kidsartbench-{dim}@")
            worst = max(worst, abs(served[name][dim]["score"] - score))
            assert served[name][dim]["score"] == pytest.approx(score, abs=1e-3), (name, dim)
    print(f"worst |router - their inference| over {len(images)} images x {len(DIMS)} dimensions: {worst:.2e}")
    # our reference backend (transformers + PEFT, our format code) is their procedure to float precision;
    # what is left between the router and them is vLLM's arithmetic
    from serve.reference import ReferenceBackend

    reference = ReferenceBackend(profile)
    for path in images[:2]:
        ours = reference.score_path(path)
        for dim in DIMS:
            assert ours[dim]["score"] == pytest.approx(expected[path.name][dim], abs=1e-5), (path.name, dim)
    # the district job and its report work unchanged on the imported deployment
    assert district_csv["status"].eq("ok").all() and len(district_csv) == 6
    for dim in DIMS:
        assert district_csv[dim].between(1, 5).all(), dim
    # the best_model checkpoint was served, not the last step (their weights differ enough to tell)
    last = their_scores(tiny_profile.base.resolved_path, release, images[:1], ["realism"], checkpoint="last_step")
    assert abs(last[images[0].name]["realism"] - expected[images[0].name]["realism"]) > 1e-3
