"""One-line description of the machine a benchmark ran on, for benchmarks/RESULTS.md."""
import datetime
import os
import platform

import cv2
import numpy as np
import torch


def cpu_model() -> str:
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe_machine() -> str:
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (
        f"nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} cores), CPU {cpu_model()}, {gpu}, "
        f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"cv2 {cv2.__version__}, numpy {np.__version__}, date {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )
