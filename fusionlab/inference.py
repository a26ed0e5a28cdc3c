"""Fusion at any image size: whole-image or tiled with overlap blending.

Large images do not fit a network's activations in memory (a 4096x3072 pair through even a
small CNN needs several GB of activations), so `fuse_tiled` runs the net on overlapping tiles
and blends them with weights that ramp linearly across each overlap. Interior seams get a
smooth cross-fade instead of a visible edge; image borders keep weight 1. Only the output
accumulator (one float32 RGB image) and a batch of tiles live in memory at a time.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fusionlab.data.checks import Problem
from fusionlab.errors import ConfigError, PipelineError
from fusionlab.models.fusion.base import FusionNet, fuse_rgb


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` shared
    pixels between neighbours; the last tile is aligned to the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return starts


def _ramp(start: int, tile: int, total: int, overlap: int) -> torch.Tensor:
    """1-D blending weight of one tile: rises over the overlap on sides shared with a neighbour."""
    w = torch.ones(tile)
    if overlap <= 0:
        return w
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    n = min(overlap, tile)
    if start > 0:
        w[:n] = ramp[:n]
    if start + tile < total:
        w[tile - n:] = torch.minimum(w[tile - n:], ramp[:n].flip(0))
    return w


def _autocast(device: torch.device, precision: str):
    if precision in ("32", "fp32", "32-true"):
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ConfigError(f"--precision '{precision}' is not one of 32, bf16, fp16")
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or 32 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def _run(net, ir, vi, text, device, precision, stats=None) -> torch.Tensor:
    try:
        with torch.inference_mode(), _autocast(device, precision):
            return fuse_rgb(net, ir.to(device), vi.to(device), text, stats).float().cpu()
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise PipelineError(
            f"out of memory fusing a {tuple(ir.shape[-2:])} input on {device}: lower --tile "
            f"(e.g. --tile 512) or --batch-size ({str(exc).splitlines()[0][:120]})"
        ) from None
    except RuntimeError as exc:  # CPU allocator failures are plain RuntimeErrors
        if "alloc" in str(exc).lower() or "out of memory" in str(exc).lower():
            raise PipelineError(
                f"out of memory fusing a {tuple(ir.shape[-2:])} input on {device}: lower --tile "
                f"(e.g. --tile 512) or --batch-size"
            ) from None
        raise


def fuse_image(net: FusionNet, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None, *,
               device: str | torch.device = "cpu", precision: str = "32") -> torch.Tensor:
    """Whole-image fusion of a batch: [B,1,H,W], [B,3,H,W] -> RGB [B,3,H,W] on the CPU."""
    return _run(net, ir, vi, text, torch.device(device), precision)


def fuse_tiled(net: FusionNet, ir: torch.Tensor, vi: torch.Tensor, text: dict | None = None, *,
               tile: int = 512, overlap: int = 64, batch_size: int = 1,
               device: str | torch.device = "cpu", precision: str = "32") -> torch.Tensor:
    """Fuse ONE pair ([1,1,H,W], [1,3,H,W]) tile by tile; returns RGB [1,3,H,W] on the CPU.

    Tiles are `tile` px squares (clipped to the image) overlapping by at least `overlap` px;
    `batch_size` tiles go through the net at once.
    """
    if ir.shape[0] != 1:
        raise ValueError("fuse_tiled takes one pair at a time")
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ConfigError(f"--tile {tile} / --overlap {overlap}: need tile > 0 and 0 <= overlap < tile")
    device = torch.device(device)
    h, w = ir.shape[-2:]
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return _run(net, ir, vi, text, device, precision)
    with torch.inference_mode():
        stats = net.image_stats(ir.to(device), vi.to(device))  # whole-image normalisation for every tile
    if stats is not None:
        stats = {k: v.expand(batch_size, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in stats.items()}
    out = torch.zeros(3, h, w)
    weight = torch.zeros(1, h, w)
    boxes = [(y, x) for y in ys for x in xs]
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        ir_t = torch.cat([ir[..., y:y + th, x:x + tw] for y, x in chunk])
        vi_t = torch.cat([vi[..., y:y + th, x:x + tw] for y, x in chunk])
        text_t = None
        if text is not None:
            text_t = {k: v.expand(len(chunk), *v.shape[1:]) for k, v in text.items()}
        stats_t = None if stats is None else {k: v[: len(chunk)] for k, v in stats.items()}
        fused = _run(net, ir_t, vi_t, text_t, device, precision, stats_t)
        for (y, x), f in zip(chunk, fused, strict=True):
            wgt = _ramp(y, th, h, overlap)[:, None] * _ramp(x, tw, w, overlap)[None, :]
            out[:, y:y + th, x:x + tw] += f * wgt
            weight[:, y:y + th, x:x + tw] += wgt
    return (out / weight).unsqueeze(0)


# ----------------------------------------------------------------------------- folders

# Above this many pixels a whole image is fused in tiles sized to it. The whole-image pass of the
# `baseline` net holds ~410 bytes of activations per pixel (5.2 GB for 4096x3072), so 2048x2048
# (4.2 MP) stays under ~1.8 GB, which a laptop has to spare.
DEFAULT_MAX_PIXELS = 2048 * 2048
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class FuseReport:
    """What a folder fuse did: pairs written, outputs kept (--resume), inputs skipped and why."""

    out_dir: Path
    pairs: int = 0
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)   # complete outputs newer than their inputs
    tiled: dict[str, int] = field(default_factory=dict)  # id -> tile size, tiled for the memory budget
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"fused {len(self.written)} of {self.pairs} pair(s) -> {self.out_dir}"
                 + (f"; {len(self.kept)} already complete and newer than their inputs (kept)" if self.kept else "")]
        if self.tiled:
            sizes = sorted(set(self.tiled.values()))
            lines.append(f"{len(self.tiled)} pair(s) over the --max-pixels budget were fused in tiles of "
                         f"{', '.join(map(str, sizes))} px")
        if self.problems:
            lines.append(f"skipped {len(self.problems)} input(s); fix or remove them, then rerun with --resume:")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class _Skip(Exception):
    """A pair that cannot be fused; carries the problem to report."""

    def __init__(self, kind: str, path, message: str):
        super().__init__(message)
        self.problem = Problem(kind, str(path), message)


def _complete_and_newer(out: Path, ir: Path, vi: Path) -> bool:
    """A whole PNG (signature and final IEND chunk) written after both inputs last changed."""
    try:
        st = out.stat()
        if st.st_mtime_ns <= max(ir.stat().st_mtime_ns, vi.stat().st_mtime_ns) or st.st_size < 20:
            return False
        with open(out, "rb") as fh:
            head = fh.read(8)
            fh.seek(st.st_size - 12)
            tail = fh.read(12)
    except OSError:
        return False
    return head == PNG_SIGNATURE and tail[4:8] == b"IEND"


def _budget_tile(max_pixels: int, overlap: int) -> int:
    """The tile side for an image over the pixel budget: the largest square within it (a multiple
    of 64 when large), and always wider than the overlap."""
    side = math.isqrt(max_pixels)
    if side >= 256:
        side -= side % 64
    return max(side, 2 * overlap, 8)


class _TextSource:
    """Captions -> text dicts for presets that need text at inference (stage 3's CLIP)."""

    def __init__(self, captions_file, clip_spec, checkpoint_config: dict, net_name: str):
        from fusionlab.errors import ConfigError

        if captions_file is None:
            raise ConfigError(f"fusion model '{net_name}' needs text at inference: pass --captions "
                              "captions.jsonl (stage 3 writes one; {'id','caption'} per line)")
        from fusionlab.data.captions_file import read_captions

        self.captions = read_captions(captions_file, missing_hint="pass stage 3's captions.jsonl to --captions")
        spec = clip_spec or checkpoint_config.get("clip")
        if spec is None:
            raise ConfigError(f"fusion model '{net_name}' needs a CLIP to encode captions: pass --clip "
                              "(stage 3's clip/ folder); the checkpoint does not name one")
        from fusionlab.models.text import ClipEncoder

        self.encoder = ClipEncoder.from_config(spec)

    def __call__(self, ids: list[str], device) -> dict:
        with torch.inference_mode():  # every id has a caption: fuse_folders checks before it starts
            pooled, tokens, mask = self.encoder.encode_text([self.captions[i] for i in ids])
        return {"pooled": pooled.to(device), "tokens": tokens.to(device), "mask": mask.to(device)}


def _read_pair(ir_path, vi_path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one pair as tensors; an unreadable file or a size mismatch raises `_Skip`."""
    from fusionlab.data.io import read_ir, read_vi
    from fusionlab.errors import DataError

    try:
        ir, _ = read_ir(ir_path)
    except DataError as exc:
        raise _Skip("corrupt", ir_path, str(exc)) from None
    try:
        vi, _ = read_vi(vi_path)
    except DataError as exc:
        raise _Skip("corrupt", vi_path, str(exc)) from None
    if ir.shape[:2] != vi.shape[:2]:
        raise _Skip("size_mismatch", vi_path,
                    f"'{ir_path}' is {ir.shape[1]}x{ir.shape[0]} but '{vi_path}' is {vi.shape[1]}x{vi.shape[0]}; "
                    "fusion needs registered pairs of the same size (resize or crop one of them)")
    return torch.from_numpy(ir)[None, None], torch.from_numpy(vi).permute(2, 0, 1)[None]


def fuse_folders(checkpoint, ir_dir, vi_dir, out_dir, *, tile: int = 0, overlap: int = 64, batch_size: int = 1,
                 precision: str = "32", device: str = "cpu", captions=None, clip=None, overwrite: bool = False,
                 resume: bool = False, strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 progress: bool = True, echo=print) -> FuseReport:
    """Fuse every pair of two folders into `out_dir/<id>.png` (each written atomically).

    A pair that cannot be fused (unpaired, duplicate, unreadable, corrupt, empty or size-mismatched
    file) is reported and skipped, and every good pair is still written; `strict` stops at the first
    one instead. `resume` keeps outputs that are complete and newer than their inputs. An image over
    `max_pixels` (0 = no limit) is fused in tiles sized to that budget. `checkpoint` is a fusion
    model folder or a shipped model's name (None: the shipped default).
    """
    from tqdm import tqdm

    from fusionlab.data.checks import CheckReport, pair_folders
    from fusionlab.data.io import write_image
    from fusionlab.errors import DataError

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
    if tile < 0:
        raise ConfigError(f"--tile {tile}: must be >= 0 (0 = whole images)")
    if tile and not 0 <= overlap < tile:  # checked here, not at the first large image: no partial --out
        raise ConfigError(f"--tile {tile} / --overlap {overlap}: need 0 <= overlap < tile")
    if max_pixels < 0 or overlap < 0:
        raise ConfigError(f"--max-pixels {max_pixels} / --overlap {overlap}: must be >= 0 (--max-pixels 0 = no limit)")
    if overwrite and resume:
        raise ConfigError("--overwrite redoes every pair and --resume keeps the complete ones: pass one of them")
    dev = _device(device)
    found = CheckReport(root=str(ir_dir))
    pairs = pair_folders(ir_dir, vi_dir, found)
    out_dir = Path(out_dir)
    report = FuseReport(out_dir, pairs=len(pairs))
    report.problems += found.problems
    if strict and report.problems:
        raise DataError(f"{report.problems[0].message} (--strict stops at the first problem; nothing was written)")
    if not pairs and not report.problems:
        raise DataError(f"no images found in --ir '{ir_dir}' and --vi '{vi_dir}' (png/jpg/bmp/tif)")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out '{out_dir}' is a file; pass a folder")
    todo = []
    for pid, ir_path, vi_path in pairs:
        out = out_dir / f"{pid}.png"
        if resume and _complete_and_newer(out, ir_path, vi_path):
            report.kept.append(pid)
        else:
            todo.append((pid, ir_path, vi_path))
    existing = [pid for pid, _, _ in todo if (out_dir / f"{pid}.png").exists()]
    if existing and not (overwrite or resume):
        raise DataError(f"--out '{out_dir}' already has {len(existing)} of the output files (e.g. '{existing[0]}.png'); "
                        "pass --resume to continue an interrupted run (complete outputs newer than their inputs are "
                        "kept), --overwrite to redo them all, or choose another --out")
    for pid, _, _ in todo:  # temporary files a killed run left behind
        for tmp in out_dir.glob(f".{pid}.png.*.tmp"):
            tmp.unlink(missing_ok=True)

    net = _load(checkpoint, echo).to(dev)
    text_source = None
    if net.needs_text:
        text_source = _TextSource(captions, clip, net.checkpoint_config, net.config.get("name", "?"))
        lacking = [i for i, _, _ in todo if i not in text_source.captions]
        if lacking:  # before any image is written
            raise DataError(f"'{captions}' has no caption for {len(lacking)} of the {len(pairs)} pairs "
                            f"(e.g. {lacking[:3]}); add one line per image id")

    bar = tqdm(total=len(todo), desc="fuse", unit="pair", disable=not progress)
    say = bar.write if progress else echo
    batch: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    # Decoding and PNG encoding (OpenCV/zlib release the GIL) run in two IO threads, overlapping
    # the net. On the CPU the net runs on `nets` pairs at once, one torch thread each, instead of
    # one pair on `nets` intra-op threads: the small convolutions of a fusion net scale better
    # across pairs than within one. Reads stay `ahead` pairs in front, at most `ahead` writes and
    # `nets` fusions are pending, so memory stays bounded; results are taken in order, so a
    # problem is reported for the right file and outputs appear in order.
    threads = torch.get_num_threads()
    nets = threads if dev.type == "cpu" else 1
    ahead = max(2, nets)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fuse-io")
    compute = ThreadPoolExecutor(max_workers=nets, thread_name_prefix="fuse-net")
    writes: deque = deque()
    fusing: deque = deque()

    def write(pid: str, image: torch.Tensor) -> None:
        writes.append((pid, pool.submit(write_image, out_dir / f"{pid}.png", image)))
        while len(writes) > ahead:
            done(*writes.popleft())

    def done(pid: str, future) -> None:
        future.result()
        report.written.append(pid)

    def collect(ids: list[str], future) -> None:
        for i, f in zip(ids, future.result(), strict=True):
            write(i, f)
        bar.update(len(ids))

    def drain() -> None:
        while fusing:
            collect(*fusing.popleft())

    def flush():
        if not batch:
            return
        ids = [b[0] for b in batch]
        text = text_source(ids, dev) if text_source else None
        fusing.append((ids, compute.submit(fuse_image, net, torch.cat([b[1] for b in batch]),
                                           torch.cat([b[2] for b in batch]), text, device=dev, precision=precision)))
        batch.clear()
        while len(fusing) > nets:
            collect(*fusing.popleft())

    def fuse_large(pid: str, ir: torch.Tensor, vi: torch.Tensor, side: int) -> None:
        """One large image, in tiles, on every thread (nothing else is fusing meanwhile)."""
        flush()
        drain()
        text = text_source([pid], dev) if text_source else None
        torch.set_num_threads(threads)
        try:
            fused = fuse_tiled(net, ir, vi, text, tile=side, overlap=min(overlap, side // 2),
                               batch_size=batch_size, device=dev, precision=precision)
        finally:
            torch.set_num_threads(1 if nets > 1 else threads)
        write(pid, fused[0])
        bar.update(1)

    if nets > 1:
        torch.set_num_threads(1)
    try:
        reads = deque(pool.submit(_read_pair, ir_path, vi_path) for _, ir_path, vi_path in todo[:ahead])
        for n, (pid, _, _) in enumerate(todo):
            future = reads.popleft()
            if n + ahead < len(todo):
                _, ir_next, vi_next = todo[n + ahead]
                reads.append(pool.submit(_read_pair, ir_next, vi_next))
            try:
                ir, vi = future.result()
            except _Skip as skip:
                if strict:
                    raise DataError(f"{skip.problem.message} (--strict stops at the first problem; the pairs "
                                    "before it are written)") from None
                report.problems.append(skip.problem)
                say(f"skipped: {skip.problem}")
                bar.update(1)
                continue
            h, w = ir.shape[-2:]
            if max_pixels and h * w > max_pixels:
                side = tile or _budget_tile(max_pixels, overlap)
                if not report.tiled:
                    say(f"note: {pid} is {w}x{h} ({h * w / 1e6:.1f} MP), over --max-pixels {max_pixels}: "
                        f"fusing it (and any other such image) in {side} px tiles")
                report.tiled[pid] = side
                fuse_large(pid, ir, vi, side)
                continue
            if tile and max(h, w) > tile:
                fuse_large(pid, ir, vi, tile)
                continue
            if batch and batch[0][1].shape[-2:] != ir.shape[-2:]:
                flush()
            batch.append((pid, ir, vi))
            if len(batch) >= batch_size:
                flush()
        flush()
        drain()
        while writes:
            done(*writes.popleft())
    finally:
        compute.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
        bar.close()
    return report


def _load(checkpoint, echo) -> FusionNet:
    """A fusion model folder, a shipped model's name, or None for the shipped default."""
    from fusionlab.models.fusion.base import load_fusion_model
    from fusionlab.shipped import DEFAULT, SHIPPED_DIR, model_dir

    name = checkpoint or DEFAULT
    if checkpoint is None or (not Path(name).exists() and (SHIPPED_DIR / str(name)).is_dir()):
        path = model_dir(name)
        echo(f"model: the shipped '{name}' ({path}); `fusionlab models` says what it was trained and scored on")
        return load_fusion_model(path)
    return load_fusion_model(checkpoint)


def _device(spec: str) -> torch.device:
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"--device '{spec}' is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return dev
