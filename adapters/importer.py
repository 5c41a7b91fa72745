"""Import published adapters as they were trained: `kidsart import-adapters SRC --format kidsartbench`.

The KidsArtBench release layout (their training script's `save_pretrained` calls):
`SRC/dimension_<dim>/` holds the last step's PEFT adapter and
`SRC/dimension_<dim>/best_model/` the best validation step's; we prefer
`best_model/` and say which one each dimension took.

Every adapter is checked against the profile's base before anything is written:
its PEFT config (a LoRA, rank within the engine's `max_lora_rank`, the base it
names), its target modules (matched with PEFT's own rule against the base
architecture's module names: the language model only), and its tensors (either
key spelling of the transformers versions, `model.layers.` or
`model.language_model.layers.`; shapes that fit the base's layers). All problems
of all dimensions are reported together; on any problem nothing is written. The
output is built in a temporary folder beside `--out` and moved into place at the
end: our manifest per adapter (provenance: imported, the source layout, folder
and file hashes, the prompt format) and `deployment.yaml` naming the prompt
format the adapters were trained for (`kidsartbench-release`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import ConfigError
from adapters.manifest import (
    AdapterManifest,
    BaseRef,
    LoraShape,
    Provenance,
    read_base_ref,
    write_deployment,
    write_manifest,
)
from adapters.prompts import load_prompt_format
from adapters.rubric import load_rubric

log = logging.getLogger(__name__)

# Source layouts we can read, and the prompt format their adapters were trained to answer.
LAYOUTS = {"kidsartbench": "kidsartbench-release"}
DIMENSION_PREFIX = "dimension_"
BEST = "best_model"
# Tensor-key spellings of PEFT-saved Qwen2.5-VL adapters; the first is the pinned transformers' own.
CANONICAL_TEXT = "base_model.model.model.language_model."
OLD_TEXT = "base_model.model.model."
VISION_PREFIXES = ("base_model.model.visual.", "base_model.model.model.visual.")


class ImportProblems(ConfigError):
    """Every problem found in a source folder, one per line."""

    kind = "import_refused"

    def __init__(self, source: Path, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"cannot import {source}: {len(problems)} problem(s)\n{lines}")


@dataclass
class SourceAdapter:
    """One dimension's adapter as found in the source folder."""

    dimension: str
    folder: Path
    checkpoint: str  # "best_model" or "last_step"
    config: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    weights_file: str = ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def find_adapters(source: Path, dimensions: list[str], problems: list[str]) -> list[SourceAdapter]:
    """The dimension folders of the release layout; problems for missing, unknown or empty ones."""
    if not source.is_dir():
        problems.append(f"{source} is not a folder")
        return []
    found: dict[str, Path] = {}
    for entry in sorted(source.iterdir()):
        if not (entry.is_dir() and entry.name.startswith(DIMENSION_PREFIX)):
            continue
        name = entry.name[len(DIMENSION_PREFIX) :]
        if name not in dimensions:
            problems.append(f"{entry.name}: {name!r} is not a dimension of the rubric ({', '.join(dimensions)})")
            continue
        found[name] = entry
    missing = [d for d in dimensions if d not in found]
    if missing:
        problems.append("missing dimension folder(s): " + ", ".join(DIMENSION_PREFIX + d for d in missing))
    adapters = []
    for dim in dimensions:
        if dim not in found:
            continue
        folder = found[dim]
        if (folder / BEST / "adapter_config.json").is_file():
            adapters.append(SourceAdapter(dim, folder / BEST, "best_model"))
        elif (folder / "adapter_config.json").is_file():
            adapters.append(SourceAdapter(dim, folder, "last_step"))
        else:
            problems.append(f"{folder.name}: no adapter_config.json in {folder.name}/{BEST}/ or {folder.name}/")
    return adapters


def read_adapter(adapter: SourceAdapter, problems: list[str]) -> None:
    """Load the PEFT config and tensors; a problem per unreadable file."""
    where = f"{DIMENSION_PREFIX}{adapter.dimension}/{'best_model/' if adapter.checkpoint == 'best_model' else ''}"
    try:
        adapter.config = json.loads((adapter.folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{where}adapter_config.json is unreadable: {exc}")
        return
    safetensors_file, bin_file = adapter.folder / "adapter_model.safetensors", adapter.folder / "adapter_model.bin"
    try:
        if safetensors_file.is_file():
            from safetensors.torch import load_file

            adapter.tensors, adapter.weights_file = load_file(str(safetensors_file)), safetensors_file.name
        elif bin_file.is_file():
            import torch

            adapter.tensors, adapter.weights_file = (
                torch.load(bin_file, map_location="cpu", weights_only=True),
                bin_file.name,
            )
        else:
            problems.append(f"{where}: no adapter_model.safetensors or adapter_model.bin")
    except Exception as exc:  # safetensors and torch raise several types for corrupt files
        problems.append(
            f"{where}{safetensors_file.name if safetensors_file.is_file() else bin_file.name} "
            f"is unreadable: {exc.__class__.__name__}: {str(exc)[:200]}"
        )


def canonical_key(key: str) -> str:
    """A PEFT tensor key in the pinned transformers' spelling (`model.language_model.layers.`)."""
    if (
        key.startswith(OLD_TEXT + "layers.")
        or key.startswith(OLD_TEXT + "norm.")
        or key.startswith(OLD_TEXT + "embed_tokens.")
    ):
        return CANONICAL_TEXT + key[len(OLD_TEXT) :]
    return key


def module_of(key: str) -> str:
    """The base module a canonical LoRA tensor key belongs to (`model.language_model.layers.0.self_attn.q_proj`)."""
    path = key[len("base_model.model.") :] if key.startswith("base_model.model.") else key
    for marker in (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B", ".lora_magnitude_vector"):
        if marker in path:
            return path.split(marker)[0]
    return path.rsplit(".", 1)[0]


@dataclass
class BaseFacts:
    """What the check needs to know of the profile's base: its architecture's modules and their sizes."""

    model_id: str
    config: dict | None  # the base's config.json, when it is on this machine
    linear_shapes: dict[str, tuple[int, int]]  # module path -> (in, out)
    sized: bool  # shapes are the base's own (False: the architecture's module names only)


def base_facts(profile) -> BaseFacts:
    """Module names (and sizes, when the base's config is here) of the profile's base, built on the meta device."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from adapters import PACKAGE_DIR

    config_dir = Path(profile.base.resolved_path)
    sized = (config_dir / "config.json").is_file()
    if not sized:
        # The 7B is not on a CPU machine: its module *names* are those of any Qwen2.5-VL, so
        # the committed tiny base's architecture stands in; sizes are not checked.
        config_dir = PACKAGE_DIR / "bases" / "tiny"
    config = AutoConfig.from_pretrained(config_dir)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config)
    shapes = {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    raw = json.loads((config_dir / "config.json").read_text(encoding="utf-8")) if sized else None
    return BaseFacts(model_id=profile.base.model_id, config=raw, linear_shapes=shapes, sized=sized)


SIZE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)


def _text_sizes(config: dict) -> dict:
    text = config.get("text_config") or config
    return {k: text.get(k, config.get(k)) for k in SIZE_KEYS}


def check_base(adapter: SourceAdapter, base: BaseFacts, trust_base: bool, problems: list[str]) -> str | None:
    """The base the adapter names, against the profile's; returns a note for the manifest."""
    named = str(adapter.config.get("base_model_name_or_path") or "")
    where = f"{DIMENSION_PREFIX}{adapter.dimension}"
    if named == base.model_id:
        return None
    local = Path(named).expanduser()
    if named and (local / "config.json").is_file() and base.config is not None:
        theirs = json.loads((local / "config.json").read_text(encoding="utf-8"))
        if theirs.get("architectures") != base.config.get("architectures") or _text_sizes(theirs) != _text_sizes(
            base.config
        ):
            problems.append(
                f"{where}: made for base {named} ({theirs.get('architectures')}, {_text_sizes(theirs)}), but the "
                f"profile's base {base.model_id} is {base.config.get('architectures')}, {_text_sizes(base.config)}"
            )
            return None
        return f"made on the local base {named}, whose config matches the profile's base"
    if named and Path(named).name.lower() == Path(base.model_id).name.lower():
        return f"made on {named}, named like the profile's base {base.model_id}"
    if trust_base:
        return f"made on {named or 'an unnamed base'}; imported onto {base.model_id} with --trust-base"
    problems.append(
        f"{where}: made for base {named or '(not named)'}, but the profile's base is {base.model_id} "
        "(pass --trust-base if it is the same model under another name; tensor shapes are checked either way)"
    )
    return None


def _any_layer(module: str) -> str:
    return re.sub(r"\.layers\.\d+\.", ".layers.*.", module)


def check_lora(adapter: SourceAdapter, base: BaseFacts, max_rank: int, problems: list[str]) -> None:
    """LoRA type, rank, targets (language model only) and tensor shapes against the base."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    where = f"{DIMENSION_PREFIX}{adapter.dimension}"
    config = adapter.config
    if config.get("peft_type") != "LORA":
        problems.append(f"{where}: peft_type is {config.get('peft_type')!r}, not 'LORA'")
        return
    rank = config.get("r")
    rank_ok = isinstance(rank, int) and 1 <= rank <= max_rank  # shapes are checked against a servable rank only
    if not isinstance(rank, int) or rank < 1:
        problems.append(f"{where}: LoRA rank r={rank!r} is not a positive integer")
    elif rank > max_rank:
        problems.append(f"{where}: LoRA rank {rank} is above the engine's max_lora_rank {max_rank}")
    targets = config.get("target_modules")
    lora = LoraConfig(
        r=max(1, rank if isinstance(rank, int) else 1),
        target_modules=targets,
        exclude_modules=config.get("exclude_modules"),
    )
    matched = [name for name in base.linear_shapes if check_target_module_exists(lora, name)]
    vision = sorted(n for n in matched if n.startswith("model.visual.") or n.startswith("visual."))
    if vision:
        problems.append(
            f"{where}: target_modules {targets!r} reach the vision tower ({len(vision)} modules, e.g. "
            f"{vision[0]}); only the language model's layers can be served"
        )
    elif not matched:
        problems.append(f"{where}: target_modules {targets!r} match no layer of the base")
    vision_keys = [k for k in adapter.tensors if k.startswith(VISION_PREFIXES)]
    if vision_keys and not vision:
        problems.append(f"{where}: {len(vision_keys)} tensors belong to the vision tower (e.g. {vision_keys[0]})")
    layer_free = {_any_layer(name) for name in base.linear_shapes}
    for key, tensor in adapter.tensors.items():
        module = module_of(canonical_key(key))
        if module.startswith(("model.visual.", "visual.")):
            continue
        shape = base.linear_shapes.get(module)
        if shape is None and not base.sized and _any_layer(module) in layer_free:
            continue  # a stand-in architecture has fewer layers; the module kind exists
        if shape is None:
            problems.append(f"{where}: tensor {key} belongs to no linear layer of the base ({module})")
            break
        if not base.sized or not rank_ok:
            continue
        in_features, out_features = shape
        expected = (rank, in_features) if ".lora_A." in key else (out_features, rank) if ".lora_B." in key else None
        if expected is not None and tuple(tensor.shape) != expected:
            problems.append(
                f"{where}: tensor {key} is {tuple(tensor.shape)}, but on the profile's base "
                f"({base.model_id}) it must be {expected}: the adapter was made for another base"
            )
            break


def _base_ref(profile) -> BaseRef:
    """The profile's base identity: hashed when it is on this machine."""
    base_dir = Path(profile.base.resolved_path)
    if (base_dir / "config.json").is_file():
        ref = read_base_ref(base_dir)
        return BaseRef(model_id=profile.base.model_id, content_hash=ref.content_hash)
    # e.g. the production 7B checked on a CPU machine: the id is all we can state
    return BaseRef(model_id=profile.base.model_id, content_hash=f"unhashed:{profile.base.model_id}")


def _write_adapter(
    adapter: SourceAdapter,
    target: Path,
    base_ref: BaseRef,
    rubric: str,
    prompt_format: str,
    layout: str,
    command: str,
    note: str | None,
) -> None:
    from safetensors.torch import save_file

    target.mkdir(parents=True)
    config = dict(adapter.config)
    source_files = {p.name: sha256_file(p) for p in sorted(adapter.folder.iterdir()) if p.is_file()}
    original_base = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = base_ref.model_id
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    tensors = {canonical_key(k): v.contiguous() for k, v in adapter.tensors.items()}
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    respelled = sum(1 for k in adapter.tensors if canonical_key(k) != k)
    notes = [f"Imported from the {layout} release layout ({adapter.checkpoint.replace('_', ' ')} checkpoint)."]
    if respelled:
        notes.append(f"{respelled} tensor keys respelled from model.layers. to model.language_model.layers.")
    if note:
        notes.append(note)
    manifest = AdapterManifest(
        name=f"{layout}-{adapter.dimension}",
        version=source_files.get(adapter.weights_file, "sha256:unknown").split(":")[1][:12],
        dimension=adapter.dimension,
        rubric=rubric,
        base=base_ref,
        lora=LoraShape(
            rank=int(config["r"]),
            alpha=float(config.get("lora_alpha", config["r"])),
            target_modules=config.get("target_modules"),
        ),
        provenance=Provenance(
            method="imported",
            created_by=command,
            notes=" ".join(notes),
            source={
                "layout": layout,
                "folder": str(adapter.folder),
                "checkpoint": adapter.checkpoint,
                "base_model_name_or_path": original_base,
                "files": source_files,
            },
        ),
        prompt_format=prompt_format,
    )
    write_manifest(target, manifest)


def import_adapters(
    source: Path,
    *,
    layout: str,
    profile,
    out: Path,
    command: str = "kidsart import-adapters",
    trust_base: bool = False,
    force: bool = False,
) -> Path:
    """Check every adapter of `source`, then write `out/<dim>/` and `out/deployment.yaml`; returns the latter.

    Raises ImportProblems naming every problem (nothing written), or ConfigError for bad arguments.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown source layout {layout!r}; known: {sorted(LAYOUTS)}")
    source, out = Path(source).resolve(), Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} exists and is not empty (pass --force to replace it)")
    prompt_format = load_prompt_format(LAYOUTS[layout])
    prompt_format.check_image_size(profile.image_size, f"profile {profile.name}")
    rubric = load_rubric(profile.rubric)
    problems: list[str] = []
    adapters = find_adapters(source, rubric.dimension_names, problems)
    for adapter in adapters:
        read_adapter(adapter, problems)
    base = base_facts(profile)
    notes = {}
    for adapter in adapters:
        if adapter.config and adapter.tensors:
            notes[adapter.dimension] = check_base(adapter, base, trust_base, problems)
            check_lora(adapter, base, profile.engine.max_lora_rank, problems)
    if problems:
        raise ImportProblems(source, problems)
    for adapter in adapters:
        log.info("%s: took %s (%s)", adapter.dimension, adapter.folder, adapter.checkpoint.replace("_", " "))
    if not base.sized:
        log.warning(
            "the base %s is not on this machine: tensor shapes were not checked against its sizes", base.model_id
        )

    base_ref = _base_ref(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        for adapter in adapters:
            _write_adapter(
                adapter,
                staging / adapter.dimension,
                base_ref,
                rubric.name,
                prompt_format.name,
                layout,
                command,
                notes.get(adapter.dimension),
            )
        write_deployment(
            staging / "deployment.yaml",
            name=f"{layout}-{profile.name}",
            rubric=rubric.name,
            base=base_ref,
            adapter_dirs=[staging / a.dimension for a in adapters],
            prompt_format=prompt_format.name,
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "deployment.yaml"
