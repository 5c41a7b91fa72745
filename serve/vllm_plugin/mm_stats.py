"""Opt-in counters for the image path inside vLLM (KIDSART_MM_STATS=<folder>).

Answers "is each image decoded, preprocessed and encoded once, or nine times?"
by counting, in every vLLM process, how many images
- ``decode``: the frontend fetched/decoded from a URL or data URL (MediaConnector),
- ``preprocess``: went through the HF image processor (a processor-cache miss),
- ``encode``: went through the Qwen2.5-VL vision encoder (an encoder-cache miss).
Each event appends "<kind> <images>" to <folder>/<pid>.txt; `read_counts` sums
them. Diagnostics only: it wraps private vLLM methods, so a vLLM upgrade may
make a counter disappear (it then logs that and counts nothing).
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from pathlib import Path

ENV_DIR = "KIDSART_MM_STATS"


def _record(kind: str, images: int) -> None:
    folder = os.environ.get(ENV_DIR)
    if not folder or images <= 0:
        return
    try:
        with open(Path(folder) / f"{os.getpid()}.txt", "a", encoding="ascii") as handle:
            handle.write(f"{kind} {images}\n")
    except OSError:
        pass


def _wrap(owner, name: str, kind: str, count) -> bool:
    original = getattr(owner, name, None)
    if original is None or getattr(original, "_kidsart_counted", False):
        return original is not None
    if _is_coroutine(original):

        @functools.wraps(original)
        async def wrapper(*args, **kwargs):
            result = await original(*args, **kwargs)
            _record(kind, count(args, kwargs, result))
            return result
    else:

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            _record(kind, count(args, kwargs, result))
            return result

    wrapper._kidsart_counted = True
    setattr(owner, name, wrapper)
    return True


def _is_coroutine(fn) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def _images_in_hf_call(args, kwargs, result) -> int:
    try:
        grid = result["image_grid_thw"]
    except (KeyError, TypeError):
        return 0
    return int(len(grid))


def _images_encoded(args, kwargs, result) -> int:
    return len(result) if isinstance(result, (list, tuple)) else 1


def install() -> list[str]:
    installed = []
    try:
        from vllm.multimodal.media.connector import MediaConnector

        one = lambda args, kwargs, result: 1  # noqa: E731
        if _wrap(MediaConnector, "fetch_image", "decode", one) and _wrap(
            MediaConnector, "fetch_image_async", "decode", one
        ):
            installed.append("decode")
    except ImportError:
        pass
    try:
        from vllm.multimodal.processing.processor import BaseMultiModalProcessor

        if _wrap(BaseMultiModalProcessor, "_call_hf_processor", "preprocess", _images_in_hf_call):
            installed.append("preprocess")
    except ImportError:
        pass
    try:
        from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

        if _wrap(Qwen2_5_VLForConditionalGeneration, "_process_image_input", "encode", _images_encoded):
            installed.append("encode")
    except ImportError:
        pass
    print(f"kidsart.vllm_plugin: image-path counters {installed} in pid {os.getpid()}", file=sys.stderr, flush=True)
    return installed


def read_counts(folder: Path) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for path in Path(folder).glob("*.txt"):
        for line in path.read_text(encoding="ascii").splitlines():
            kind, _, value = line.partition(" ")
            if value.isdigit():
                totals[kind] += int(value)
    return {kind: totals.get(kind, 0) for kind in ("decode", "preprocess", "encode")}
