"""Machine description printed by every benchmark (figures are only comparable within one run)."""

from __future__ import annotations

import os
import platform


def machine_info() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    parts = [
        f"cpu: {cpu}",
        f"cores: {os.cpu_count()}",
        f"memory: {mem}",
        f"python {platform.python_version()}",
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
        if torch.cuda.is_available():
            parts.append(f"gpu: {torch.cuda.get_device_name(0)}")
    except ImportError:
        pass
    return "machine: " + ", ".join(parts)


def machine() -> dict[str, object]:
    """The machine as JSON fields (what :func:`machine_info` prints), and the load average."""
    import torch

    fields: dict[str, object] = {"description": machine_info().removeprefix("machine: ")}
    fields["cores"] = os.cpu_count()
    fields["torch_threads"] = torch.get_num_threads()
    fields["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return fields
