"""Peak resident memory of this process since it started (imported by the runners)."""

from __future__ import annotations


def peak_rss_mb() -> int:
    """``VmHWM`` of ``/proc/self/status`` in MiB: the peak of this program's own memory image.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not: on Linux it keeps the peak of the image the
    process replaced at ``exec``, so a runner started by a large parent reports the parent's size.
    Falls back to ``ru_maxrss`` where ``/proc`` is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
