"""Build a small Qwen2.5-VL base model locally, deterministically.

No weights can be downloaded on the development machines, so tests, the demo and
the benchmark use a Qwen2.5-VL of the real architecture built from a config:
random init from a fixed seed, and a byte-level BPE tokenizer trained here on the
project's own rubric and prompt texts, with Qwen's special tokens and a chat
template that renders an image as <|vision_start|><|image_pad|><|vision_end|>.
The same profile and seed give the same files and so the same content hash.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from adapters.errors import ConfigError
from adapters.hashing import folder_hash
from adapters.manifest import BASE_MANIFEST_NAME, BaseRef
from adapters.profiles import Profile
from adapters.prompts import SYSTEM_PROMPT, dimension_instruction
from adapters.rubric import load_rubric, shipped_rubrics

log = logging.getLogger(__name__)

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

_GENERAL_TEXT = (
    "The child drew a house, a tree, the sun, a dog, a cat, flowers and people in a garden. "
    "Colours: red, orange, yellow, green, blue, purple, pink, brown, black, white and grey. "
    "Lines are thick, thin, dotted, wavy, zigzag, hatched and smooth. The picture is balanced, crowded or empty. "
    "A rocket flies over the sea; a dragon sleeps in a castle; a robot waters plants on the moon. "
    "Grade 1 2 3 4 5 6 7 8 9. Score 1 2 3 4 5. 0123456789"
)


def _tokenizer_corpus() -> list[str]:
    """Texts the tokenizer is trained on: every shipped rubric's prompts plus general words."""
    texts = [SYSTEM_PROMPT, _GENERAL_TEXT]
    for name in shipped_rubrics():
        rubric = load_rubric(name)
        for dim in rubric.dimensions:
            texts.append(dimension_instruction(rubric, dim, "A drawing of my family at the beach."))
    return texts * 4


def build_tokenizer(vocab_size: int):
    """Train a byte-level BPE with Qwen's special tokens; digits are always single tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
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
    for digit in "12345":
        ids = fast.encode(digit, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"score token {digit!r} is not a single token in the built tokenizer: {ids}")
    return fast


def build_base(profile: Profile, out_dir: Path | None = None, *, force: bool = False) -> BaseRef:
    """Write the profile's base checkpoint + processor to its path; return its identity."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if profile.base.source != "local" or profile.base.build is None:
        raise ConfigError(f"profile {profile.name!r} has a {profile.base.source} base; only local bases are built here")
    spec = profile.base.build
    out_dir = Path(out_dir or profile.base.resolved_path)
    if out_dir.exists():
        if not force and (out_dir / BASE_MANIFEST_NAME).exists():
            log.info("base already built at %s", out_dir)
            return BaseRef(model_id=profile.base.model_id, content_hash=folder_hash(out_dir))
        shutil.rmtree(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)

    tokenizer = build_tokenizer(spec.vocab_size)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    text = spec.text
    vision = spec.vision
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
    pretraining = None
    if spec.pretrain is not None:
        from train.pretrain import pretrain_vision

        pre = spec.pretrain
        pretraining = pretrain_vision(
            model, processor, image_size=profile.image_size, n_images=pre.n_images, epochs=pre.epochs,
            learning_rate=pre.learning_rate, batch_size=pre.batch_size, seed=spec.seed, attribute_weight=pre.attribute_weight,
        )
        model.eval()
    model.save_pretrained(tmp_dir, safe_serialization=True)
    processor.save_pretrained(tmp_dir)
    parameters = sum(p.numel() for p in model.parameters())
    ref = BaseRef(model_id=profile.base.model_id, content_hash=folder_hash(tmp_dir))
    (tmp_dir / BASE_MANIFEST_NAME).write_text(
        yaml.safe_dump(
            {
                "model_id": ref.model_id,
                "content_hash": ref.content_hash,
                "profile": profile.name,
                "seed": spec.seed,
                "parameters": parameters,
                "architecture": "Qwen2_5_VLForConditionalGeneration",
                "note": (
                    "random init from a config and a locally trained tokenizer; not a pretrained model"
                    if pretraining is None
                    else "random init from a config and a locally trained tokenizer, then a brief visual pre-training of the "
                    "vision encoder on synthetic drawings (see `pretraining`); the language model is random"
                ),
                "pretraining": pretraining,
                "score_token_ids": {d: tokenizer.convert_tokens_to_ids(d) for d in "12345"},
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    tmp_dir.rename(out_dir)
    log.info("built base %s (%d parameters) at %s, %s", ref.model_id, parameters, out_dir, ref.content_hash)
    return ref
