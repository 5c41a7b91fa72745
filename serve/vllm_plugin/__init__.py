"""kidsart's vLLM general plugin (entry point group ``vllm.general_plugins``).

vLLM calls ``register()`` in every process it starts (API server, engine core,
workers). When the environment asks for it (``KIDSART_FAST_LORA_OPS=1``, set by
``serve.engine.engine_env`` from the profile's ``engine.fast_lora_ops``), it
replaces the PyTorch-native SGMV LoRA ops used by vLLM's CPU punica wrapper with
the grouped versions in ``serve.vllm_plugin.lora_ops`` (same signatures, same
results, one matmul per adapter instead of a per-token weight copy). Without the
variable it does nothing (``KIDSART_MM_STATS=<folder>`` additionally turns on
the image-path counters of ``serve.vllm_plugin.mm_stats``, and
``KIDSART_ENGINE_DIES_WITH_PARENT=1`` ties each vLLM process started by
multiprocessing to its parent's life), so installing the package changes no other vLLM run.

Keep this module import-light: vLLM imports it in every process.
"""

from __future__ import annotations

import os
import sys

ENV_FLAG = "KIDSART_FAST_LORA_OPS"
_OPS = ("sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")
_installed = False


def enabled() -> bool:
    return os.environ.get(ENV_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}


def install_fast_lora_ops() -> list[str]:
    """Patch vLLM's torch LoRA ops (and the CPU punica wrapper's references); idempotent.

    Returns the names of the modules patched.
    """
    global _installed
    import importlib

    from serve.vllm_plugin import lora_ops

    patched = []
    for module_name in (
        "vllm.lora.ops.torch_ops.lora_ops",
        "vllm.lora.ops.torch_ops",
        "vllm.lora.punica_wrapper.punica_cpu",
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a vLLM without this module (e.g. another platform's build)
            continue
        for name in _OPS:
            if hasattr(module, name):
                setattr(module, name, getattr(lora_ops, name))
        patched.append(module_name)
    if not _installed:
        _installed = True
        # vLLM's logger is configured in its processes; fall back to stderr otherwise.
        # One line on stderr per process, whatever VLLM_LOGGING_LEVEL is, so that an
        # engine log shows the ops are in place.
        print(
            f"kidsart.vllm_plugin: grouped CPU LoRA ops installed ({', '.join(_OPS)}) in pid {os.getpid()}",
            file=sys.stderr,
            flush=True,
        )
    return patched


def die_with_parent() -> bool:
    """In a process vLLM started with multiprocessing (its EngineCore under an engine replica, its workers under
    the EngineCore): ask Linux to SIGKILL it when its parent dies. Without this a replica process killed by
    Ray (or by the OOM killer) leaves its EngineCore and worker running, reparented to init, holding the model's
    memory (seen here: two orphaned engines of 5 GB each after a driver was killed)."""
    import ctypes
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    if parent is None:  # the replica process itself: Ray owns its life
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return False
    if os.getppid() != parent.pid:  # the parent died before the request took effect
        os._exit(1)
    return True


def register() -> None:
    """vLLM general-plugin entry point."""
    if os.environ.get("KIDSART_ENGINE_DIES_WITH_PARENT") == "1":
        die_with_parent()
    if enabled():
        install_fast_lora_ops()
    if os.environ.get("KIDSART_MM_STATS"):  # counters first: they then count real decodes only
        from serve.vllm_plugin import mm_stats

        mm_stats.install()
