"""Work over many slides on many devices: the manifest and feature-store stages at scale.

``runner`` spreads per-slide tasks over one process, dask.distributed workers or torchrun
ranks (each with its device) and gathers their results in slide order; ``pipeline`` builds
a manifest (batched captioning) and a feature store with it; ``cli`` is ``mrplip manifest``
and ``mrplip embed --store``. Everything a worker writes is per slide, resumable and
lock-guarded (``data.slide_cache``), so the merged outputs are identical whatever the
number of workers.
"""
