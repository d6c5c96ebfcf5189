"""Mixed precision: an autocast context and a GradScaler that is only active for fp16."""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: str):
    """Context manager running the forward pass in ``precision`` (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])


def make_scaler(precision: str, device: str) -> torch.amp.GradScaler:
    """Loss scaler; enabled only for fp16 (bf16 has fp32's exponent range)."""
    device_type = torch.device(device).type
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")
