"""Pure geometry: tile grids, viewport to tiles, multi-magnification bags, tissue masks."""
