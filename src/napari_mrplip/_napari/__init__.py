"""The napari layer: reader, sample data, widgets. The only package importing napari/Qt.

Importing this package also keeps triton out of the napari process (see
:func:`_keep_triton_out`), because the widgets import torch lazily, after the viewer's
OpenGL context exists.
"""

from __future__ import annotations

import os
import sys


def _keep_triton_out() -> None:
    """Stop torch from loading triton inside the napari process.

    With Mesa's software OpenGL (llvmpipe, as under Xvfb or on a machine without a GPU
    driver) the GL context loads Mesa's LLVM; triton bundles another LLVM, and loading it
    afterwards (torchvision/open_clip import ``torch._dynamo``, which imports triton)
    crashes the process with a segmentation fault. The panels never use ``torch.compile``,
    so torch runs fine without triton; training and the CLI run in their own processes
    and keep it. Set ``MRPLIP_ALLOW_TRITON=1`` to opt out.
    """
    if os.environ.get("MRPLIP_ALLOW_TRITON") == "1" or "triton" in sys.modules:
        return
    sys.modules["triton"] = (
        None  # ``import triton`` now raises ImportError: torch treats it as absent
    )


_keep_triton_out()
