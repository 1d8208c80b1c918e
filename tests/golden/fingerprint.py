"""What a whole training's last bits depend on, beside the code: the machine's fingerprint.

Two runs of the same code agree bit for bit only where every item here agrees: the CPU (vendor,
model and flags: MKL and oneDNN pick their kernels by them), the torch build (version, MKL and
oneDNN versions: ``torch.__config__.show()``), ATen's vector capability, numpy (the synthetic
data), the thread count, and the environment variables that steer kernel choice. The golden
references record it; a comparison runs only where it matches exactly (tests/golden/README.md).
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

#: Environment variables that change which kernels run (and so the last bits of a result);
#: ``ATEN_CPU_CAPABILITY`` shows in ``cpu_capability`` itself.
KERNEL_ENV = (
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "OPENBLAS_CORETYPE",
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def fingerprint(threads: int) -> dict[str, Any]:
    """This machine's fingerprint for runs with ``threads`` torch threads."""
    import numpy
    import torch

    info = _cpuinfo()
    flags = sorted((info.get("flags") or info.get("Features") or "").split())
    return {
        "machine": platform.machine(),
        "cpu_vendor": info.get("vendor_id", ""),
        "cpu_model": info.get("model name", platform.processor()),
        "cpu_family_model_stepping": "/".join(
            info.get(k, "") for k in ("cpu family", "model", "stepping")
        ),
        "cpu_flags": _digest(" ".join(flags)),
        "torch": torch.__version__,
        "torch_build": _digest(torch.__config__.show()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": numpy.__version__,
        "threads": threads,
        "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }


def mismatch(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: recorded != current`` for every item that differs (empty: same fingerprint)."""
    keys = sorted(set(recorded) | set(current))
    return [
        f"{k}: {recorded.get(k)!r} != {current.get(k)!r}"
        for k in keys
        if recorded.get(k) != current.get(k)
    ]
