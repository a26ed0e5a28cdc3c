"""Scene descriptions (`scenes/<id>.json`, written by the synthetic generator): which modality
sees each labelled object.

`visible_in` is ground truth. It is read here for scoring only (object contrast retention,
visibility-split recall) and never becomes part of a Sample, so no model input can carry it.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusionlab.errors import DataError


def read_visibility(path: str | Path) -> list[dict]:
    """`[{"ir": bool, "vi": bool}, ...]`, one per object in label-row order."""
    path = Path(path)
    try:
        scene = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"scene description '{path}' is not readable JSON ({exc}); regenerate or delete it") from None
    objects = scene.get("objects") if isinstance(scene, dict) else None
    if not isinstance(objects, list):
        raise DataError(f"scene description '{path}' has no 'objects' list")
    out = []
    for k, obj in enumerate(objects):
        seen = obj.get("visible_in") if isinstance(obj, dict) else None
        if not isinstance(seen, dict) or not all(isinstance(seen.get(m), bool) for m in ("ir", "vi")):
            raise DataError(f"scene description '{path}': object {k} lacks visible_in {{\"ir\": bool, \"vi\": bool}}")
        out.append({"ir": seen["ir"], "vi": seen["vi"]})
    return out
