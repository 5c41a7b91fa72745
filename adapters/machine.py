"""Facts about the machine that made a file: CPU model, vector-instruction flags, library versions.

Float results of training depend on the CPU's vector width (AVX2 vs AVX-512, native
bf16 or not), so every base made by training records where it was made, and
`kidsart build-base --check` compares bit-for-bit only on a machine with the same flags.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

# Flags that change which float kernels run (and so the low bits of training results).
_RELEVANT = re.compile(r"^(avx\S*|fma\S*|f16c|amx\S*|sse4_\d)$")


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """(model name, sorted vector-instruction flags) from /proc/cpuinfo; ('unknown', []) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown", []
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown"
    )
    flags_line = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "")
    return model, sorted({f for f in flags_line.split() if _RELEVANT.match(f)})


def machine_facts() -> dict:
    """CPU model and flags plus the versions whose kernels made the numbers."""
    import torch

    model, flags = cpu_model_and_flags()
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
    }
