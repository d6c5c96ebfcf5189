"""``python -m napari_mrplip.train ...`` = ``mrplip pretrain ...`` (what torchrun launches)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
