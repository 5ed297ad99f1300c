"""What both experiment scripts record about the machine they ran on (experiments/run.py and
experiments/benchmarks/run.py): built on aelab.runs.environment(), the record every run directory keeps."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from pathlib import Path


def memory() -> str:
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        return f"{kb / 2**20:.0f} GiB"
    return ""


def machine_info() -> dict:
    """Date (UTC), platform, CPU, cores (all and usable by this process), memory, torch threads, GPU, libc, Python,
    package versions and git commit (those three from aelab.runs.environment())."""
    import torch

    from aelab.runs import environment

    env = environment()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": env["platform"], "cpu": env["cpu"], "cores": env["cores"], "usable_cores": usable,
            "memory": memory(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "libc": " ".join(platform.libc_ver()), "python": env["python"], "packages": env["packages"],
            "git_commit": env["git_commit"]}


def package_versions(info: dict) -> str:
    """'aelab 0.1.0, torch 2.x, ...': the installed ones among aelab.runs.PACKAGES."""
    return ", ".join(f"{name} {version}" for name, version in info["packages"].items() if version)
