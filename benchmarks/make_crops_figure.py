"""Figure of RoadScene test crops: IR | VIS | SeAFusion | each method, one row per image.

It only arranges fused images that `fusionlab run` wrote (no numbers come from here):

    .venv/bin/python benchmarks/make_crops_figure.py --ours runs/roadscene-ship/fusion/fused \
        --out docs/img/roadscene_crops.png
    .venv/bin/python benchmarks/make_crops_figure.py --method baseline=runs/rs-baseline/fusion/fused \
        --method tgif=runs/rs-tgif/fusion/fused --out docs/img/roadscene_presets.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
# (image id, crop box x, y, w, h): a car ahead, a street with signs, parked cars and pedestrians
CROPS = (
    ("FLIR_00211", 120, 60, 240, 180),
    ("FLIR_04269", 100, 60, 240, 180),
    ("FLIR_01130", 150, 80, 240, 180),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ours", help="folder of our fused PNGs (roadscene test), titled 'ours (baseline)'")
    p.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                   help="a titled column of fused PNGs (repeatable)")
    p.add_argument("--out", default="docs/img/roadscene_crops.png")
    p.add_argument("--data", default=str(SHARED / "datasets" / "roadscene" / "test"))
    p.add_argument("--seafusion", default=str(SHARED / "reference" / "roadscene-test" / "seafusion"))
    args = p.parse_args()

    from PIL import Image, ImageDraw

    def find(folder: str, stem: str) -> Path:
        hits = sorted(Path(folder).glob(f"{stem}.*"))
        if not hits:
            raise SystemExit(f"no image '{stem}.*' in {folder}")
        return hits[0]

    methods = [tuple(m.split("=", 1)) for m in args.method] + ([("ours (baseline)", args.ours)] if args.ours else [])
    if not methods or any(len(m) != 2 for m in methods):
        raise SystemExit("pass --ours DIR or --method NAME=DIR (repeatable)")
    titles = ("IR", "VIS", "SeAFusion", *(name for name, _ in methods))
    rows = []
    for stem, x, y, w, h in CROPS:
        tiles = []
        for folder in (Path(args.data) / "ir", Path(args.data) / "vi", args.seafusion, *(d for _, d in methods)):
            im = Image.open(find(str(folder), stem)).convert("RGB")
            tiles.append(im.crop((x, y, min(x + w, im.width), min(y + h, im.height))).resize((w, h)))
        rows.append(tiles)
    w, h, pad, head = CROPS[0][3], CROPS[0][4], 4, 18
    cols = len(titles)
    canvas = Image.new("RGB", (cols * w + (cols + 1) * pad, head + len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((pad + c * (w + pad) + 4, 3), title, fill="black")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            canvas.paste(tile, (pad + c * (w + pad), head + pad + r * (h + pad)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # 256-colour palette: these crops are mostly gray, and it keeps the committed figure small
    canvas = canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    canvas.save(out, optimize=True)
    print(f"{out}: {canvas.size[0]}x{canvas.size[1]}, {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
