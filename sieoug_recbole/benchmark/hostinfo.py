"""Which machine a run ran on and how fast it was then: what a reader needs to compare the
wall-clock figures of runs made on different hosts (virtual machines often share a host name).
"""

import hashlib
import socket
import statistics
import time

# Files that identify a machine, most specific first: the hardware UUID of a (virtual)
# machine (readable by root only on most systems), then the operating system's id (cloned
# images can share it).
MACHINE_ID_FILES = ("/sys/class/dmi/id/product_uuid", "/etc/machine-id")


def host_id(id_files=MACHINE_ID_FILES):
    """Twelve hex digits, stable for a machine: a hash of its host name and the first readable
    machine id file (the host name alone when none is readable)."""
    parts = [socket.gethostname()]
    for path in id_files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            parts.append(text)
            break
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def cpu_probe_ms(size=384, repeats=7):
    """Median milliseconds of one ``size`` x ``size`` float32 matrix product on torch's current
    thread count, after one warm-up. A fixed workload timed where the run ran: its ratio between
    two records says how much of their per-epoch difference is the host (or its load), not the
    model."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator)
    b = torch.rand(size, size, generator=generator)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)
