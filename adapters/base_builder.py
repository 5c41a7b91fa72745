"""Make a small Qwen2.5-VL base from a config: tokenizer, seeded random init, saved folder.

No weights can be downloaded on the development machines, so tests, the demo and
the benchmark use a Qwen2.5-VL of the real architecture made here:
- a byte-level BPE tokenizer trained on a FROZEN text (`adapters/bases/tokenizer_corpus.txt`,
  part of the recipe, never read from live prompts or rubrics, so later prompt
  changes do not change the tokenizer), with Qwen's special tokens and a chat
  template that renders an image as <|vision_start|><|image_pad|><|vision_end|>;
- weights initialised from a fixed seed.
This part involves no training: the same profile gives the same bytes on every
machine (the bench base is built this way on demand). A base whose recipe includes
pre-training is made by `train.base` on top of these functions and committed as a
fixture, because training arithmetic differs between CPUs.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from adapters import PACKAGE_DIR
from adapters.errors import ConfigError
from adapters.hashing import file_hash, folder_hash
from adapters.machine import machine_facts
from adapters.manifest import BASE_MANIFEST_NAME, BaseRef
from adapters.profiles import Profile
from adapters.score_tokens import score_token_ids

log = logging.getLogger(__name__)

TOKENIZER_CORPUS = PACKAGE_DIR / "bases" / "tokenizer_corpus.txt"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(vocab_size: int):
    """Train a byte-level BPE on the frozen corpus with Qwen's special tokens; digits are always single tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = TOKENIZER_CORPUS.read_text(encoding="utf-8").splitlines()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    score_token_ids(fast, list("12345"), "the built tokenizer")  # every rubric's score tokens are digits
    return fast


def _require_local(profile: Profile):
    if profile.base.source != "local" or profile.base.build is None:
        raise ConfigError(f"profile {profile.name!r} has a {profile.base.source} base; only local bases are built here")
    return profile.base.build


def random_base(profile: Profile):
    """(model, processor) of the profile's architecture, weights drawn from its seed (float32, eval mode)."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    spec = _require_local(profile)
    tokenizer = build_tokenizer(spec.vocab_size)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    text, vision = spec.text, spec.vision
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            max_position_embeddings=4096,
            max_window_layers=text.num_hidden_layers,
            rope_scaling={"type": "mrope", "mrope_section": list(text.mrope_section)},
            rope_theta=1_000_000.0,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=vision.depth,
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_heads=vision.num_heads,
            out_hidden_size=text.hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=list(vision.fullatt_block_indexes),
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    pixels = profile.image_size * profile.image_size
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def save_base(
    profile: Profile, model, processor, out_dir: Path, *, note: str, pretraining: dict[str, Any] | None = None
) -> BaseRef:
    """Write model + processor + base manifest to out_dir atomically (via a `.building` folder)."""
    out_dir = Path(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    model.save_pretrained(tmp_dir, safe_serialization=True)
    processor.save_pretrained(tmp_dir)
    spec = _require_local(profile)
    tokenizer = processor.tokenizer
    ref = BaseRef(model_id=profile.base.model_id, content_hash=folder_hash(tmp_dir))
    manifest = {
        "model_id": ref.model_id,
        "content_hash": ref.content_hash,
        "profile": profile.name,
        "architecture": "Qwen2_5_VLForConditionalGeneration",
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_by_part": {
            "vision": sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}"),
            "language": sum(p.numel() for n, p in model.named_parameters() if ".visual." not in f".{n}"),
        },
        "recipe": spec.model_dump(mode="json"),
        "tokenizer_corpus": {"path": f"adapters/bases/{TOKENIZER_CORPUS.name}", "sha256": file_hash(TOKENIZER_CORPUS)},
        "note": note,
        "pretraining": pretraining,
        "made_on": machine_facts(),
        "score_token_ids": {d: tokenizer.convert_tokens_to_ids(d) for d in "12345"},
    }
    (tmp_dir / BASE_MANIFEST_NAME).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    log.info("wrote base %s (%d parameters) to %s, %s", ref.model_id, manifest["parameters"], out_dir, ref.content_hash)
    return ref


def build_random_base(profile: Profile, out_dir: Path | None = None, *, force: bool = False) -> BaseRef:
    """Build a base whose recipe has no pre-training (e.g. bench) at out_dir or its path; reuse it if present."""
    spec = _require_local(profile)
    if spec.pretrain is not None:
        raise ConfigError(
            f"profile {profile.name!r}: its base is pre-trained; it is a committed fixture "
            "(regenerate it with `kidsart build-base --profile NAME`, which never writes over it)"
        )
    out_dir = Path(out_dir or profile.base.resolved_path)
    if not force and _is_current(profile, out_dir):
        log.info("base already built at %s", out_dir)
        return BaseRef(model_id=profile.base.model_id, content_hash=folder_hash(out_dir))
    model, processor = random_base(profile)
    return save_base(
        profile,
        model,
        processor,
        out_dir,
        note="random init from a config and a locally trained tokenizer; not a pretrained model",
    )


def _is_current(profile: Profile, out_dir: Path) -> bool:
    """A built base is reused only if it was made from the same recipe and tokenizer corpus."""
    path = out_dir / BASE_MANIFEST_NAME
    if not path.is_file():
        return False
    recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return recorded.get("recipe") == _require_local(profile).model_dump(mode="json") and (
        recorded.get("tokenizer_corpus") or {}
    ).get("sha256") == file_hash(TOKENIZER_CORPUS)


def ensure_local_base(profile: Profile) -> None:
    """Make sure a local base is on disk: build a random-init one if missing or stale; a fixture must be committed."""
    if profile.base.source != "local":
        return
    if profile.base.fixture:
        if not (profile.base.resolved_path / BASE_MANIFEST_NAME).is_file():
            raise ConfigError(
                f"the committed base of profile {profile.name!r} is missing at {profile.base.resolved_path} "
                "(it is part of the repository; restore it with git)"
            )
        return
    build_random_base(profile)
