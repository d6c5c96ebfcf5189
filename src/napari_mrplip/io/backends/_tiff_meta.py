"""Physical pixel size and objective power from TIFF metadata (SVS, OME, resolution tags)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

#: Micrometres per unit for the unit strings OME and NGFF use.
UNIT_TO_UM: dict[str, float] = {
    "µm": 1.0,
    "um": 1.0,
    "micrometer": 1.0,
    "micron": 1.0,
    "\u03bcm": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "pm": 1e-6,
    "picometer": 1e-6,
}

_SVS_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
_SVS_MAG = re.compile(r"\|\s*AppMag\s*=\s*([0-9.eE+-]+)")


def _positive(value: str | float | None) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if 0 < v < 1e6 and v == v else None


def svs_mpp_mag(description: str) -> tuple[float | None, float | None]:
    """``(mpp, magnification)`` from an Aperio ImageDescription (``MPP =``, ``AppMag =``)."""
    if not description.startswith("Aperio"):
        return None, None
    mpp = _SVS_MPP.search(description)
    mag = _SVS_MAG.search(description)
    return (_positive(mpp.group(1)) if mpp else None, _positive(mag.group(1)) if mag else None)


def ome_mpp_mag(ome_xml: str, image_index: int = 0) -> tuple[float | None, float | None]:
    """``(mpp, magnification)`` from OME-XML: PhysicalSizeX/Y (with units), objective power."""
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None, None
    ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    images = root.findall(f"{ns}Image")
    if not images:
        return None, None
    image = images[min(image_index, len(images) - 1)]
    pixels = image.find(f"{ns}Pixels")
    mpp = None
    if pixels is not None:
        sizes = []
        for axis in ("X", "Y"):
            value = _positive(pixels.get(f"PhysicalSize{axis}"))
            factor = UNIT_TO_UM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
            if value is not None and factor is not None:
                sizes.append(value * factor)
        mpp = sum(sizes) / len(sizes) if sizes else None
    return mpp, _ome_magnification(root, image, ns)


def _ome_magnification(root: ET.Element, image: ET.Element, ns: str) -> float | None:
    ref = image.find(f"{ns}ObjectiveSettings")
    objectives = root.findall(f".//{ns}Objective")
    if ref is not None:
        objectives = [o for o in objectives if o.get("ID") == ref.get("ID")] or objectives
    for obj in objectives:
        mag = _positive(obj.get("NominalMagnification"))
        if mag is not None:
            return mag
    return None


def resolution_mpp(page) -> float | None:
    """µm/px from XResolution/YResolution when ResolutionUnit is inch or centimetre.

    Unit NONE (1) says nothing physical, so it gives ``None``.
    """
    unit = page.tags.valueof(296, 2)
    per_um = {2: 25400.0, 3: 10000.0}.get(int(unit))
    if per_um is None:
        return None
    values = []
    for code in (282, 283):
        res = page.tags.valueof(code)
        if isinstance(res, tuple) and len(res) == 2 and res[1]:
            res = res[0] / res[1]
        px_per_unit = _positive(res)
        if px_per_unit is not None:
            values.append(per_um / px_per_unit)
    return sum(values) / len(values) if values else None
