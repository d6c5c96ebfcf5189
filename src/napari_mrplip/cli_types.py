"""argparse ``type=`` validators shared by the subcommands.

A bad number or device is refused while the command line is parsed, so the user gets
argparse's one-line ``mrplip CMD: error: argument --mpp: ...`` and exit status 2 before any
slide or model is opened. Torch is imported only to check a GPU device that was asked for.
"""

from __future__ import annotations

import argparse
import math
import re

# one --slide-mpp for every command; defined torch-free in io (``mrplip info`` uses it too)
from napari_mrplip.io.stated_mpp import add_slide_mpp, check_mpp, parse_slide_mpp  # noqa: F401

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def mpp(text: str) -> float:
    """µm/px in the one accepted range (``io.stated_mpp.check_mpp``: 0.01-100)."""
    try:
        return check_mpp(text, "µm/px")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fraction(lo: float = 0.0, hi: float = 1.0, what: str = "a fraction"):
    """A float in ``[lo, hi]``."""

    def parse(text: str) -> float:
        value = _number(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be between {lo:g} and {hi:g}, got {text}")
        return value

    return parse


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def device(text: str) -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``, and present on this machine."""
    text = text.strip().lower()
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps"
        )
    if text.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= n:
            raise argparse.ArgumentTypeError(
                f"{text}: no CUDA GPU with that index here ({n} found); use --device cpu or auto"
                if n
                else f"{text}: no CUDA GPU here (torch.cuda.is_available() is False); "
                "use --device cpu or auto"
            )
    if text == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("mps: no Apple GPU here; use --device cpu or auto")
    return text
