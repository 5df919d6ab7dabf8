"""Device selection for inference."""

from __future__ import annotations

import torch


def select_device(setting: str = "auto") -> torch.device:
    """``auto`` picks cuda when available, else cpu; ``cpu``/``cuda[:n]`` are taken as given."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(setting)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("STREAMINFER_DEVICE asks for cuda but no CUDA device is available")
    return dev
