"""Image files in and out: 8/16-bit, gray/RGB/RGBA, JPG/PNG/BMP/TIFF.

OpenCV decodes (it keeps 16-bit colour that Pillow would squash to 8 bits); Pillow only probes
headers, which is cheap enough to run over a whole dataset when it is opened. A gray image saved
as three equal channels (common for IR) is returned as gray, so IR is always one channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEPTH_SCALE = 256.0  # depth PNGs store metres x 256 in 16 bits (KITTI convention), 0 = invalid


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, as read: size, channels after gray detection, bit depth."""

    path: str
    width: int
    height: int
    channels: int  # 1 or 3 after dropping alpha and collapsing equal channels
    bit_depth: int  # 8 or 16
    stored_channels: int  # channels in the file (1, 3 or 4)

    @property
    def gray(self) -> bool:
        return self.channels == 1


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header only; DataError if the file is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError, ImportError) as exc:
        # ImportError: once ultralytics is imported (stage 5), its patched Image.open retries an
        # unreadable file with an optional HEIF plugin and fails on the missing import instead
        raise DataError(f"'{path}' is not a readable image ({exc}); replace or delete it") from None


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Decode `path` to uint8/uint16 [H,W] (gray) or [H,W,3] (RGB); corrupt files raise DataError."""
    import cv2

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror}") from None
    if not data:
        raise DataError(f"'{path}' is empty (0 bytes); replace or delete it")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if arr is None or arr.size == 0:
        raise DataError(f"'{path}' is corrupt or not an image; replace or delete it")
    if path.suffix.lower() in (".jpg", ".jpeg") and not _jpeg_complete(data):
        raise DataError(f"'{path}' is a truncated JPEG (no end marker); replace or delete it")
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(f"'{path}' has unsupported sample type {arr.dtype}; use 8- or 16-bit images")
    stored = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.ndim == 3:
        if stored == 1:
            arr = arr[:, :, 0]
        else:  # OpenCV gives BGR(A); drop alpha, turn into RGB
            arr = np.ascontiguousarray(arr[:, :, 2::-1])
            if np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2]):
                arr = np.ascontiguousarray(arr[:, :, 0])
    info = ImageInfo(
        path=str(path),
        width=int(arr.shape[1]),
        height=int(arr.shape[0]),
        channels=1 if arr.ndim == 2 else 3,
        bit_depth=16 if arr.dtype == np.uint16 else 8,
        stored_channels=stored,
    )
    return arr, info


def _jpeg_complete(data: bytes) -> bool:
    """OpenCV silently decodes truncated JPEGs. A complete one ends with the EOI marker; when a
    camera appended a trailer after it, Pillow's strict decoder settles the question."""
    if b"\xff\xd9" in data[-64:]:
        return True
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except OSError:
        return False
    return True


def to_unit_float(arr: np.ndarray, *, stretch_16bit: bool = False) -> np.ndarray:
    """uint8/uint16 -> float32 in [0,1]. 16-bit thermal counts span a narrow band of the range,
    so IR may be stretched per image between its 0.5 and 99.5 percentiles."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    x = arr.astype(np.float32)
    if stretch_16bit:
        lo, hi = (float(v) for v in np.percentile(x, (0.5, 99.5)))
        return np.clip((x - lo) / max(hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    return x / 65535.0


def read_ir(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """IR as float32 [H,W] in [0,1]; colour-coded IR (rare) is reduced to its luminance."""
    arr, info = read_image(path)
    x = to_unit_float(arr, stretch_16bit=True)
    if x.ndim == 3:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
    return x, info


def read_vi(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Visible as float32 [H,W,3] RGB in [0,1]; gray is replicated to three channels."""
    arr, info = read_image(path)
    x = to_unit_float(arr)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    return x, info


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """Depth PNG (16-bit, metres x 256, 0 = invalid) -> float32 metres [H,W]."""
    arr, info = read_image(path)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise DataError(
            f"depth map '{path}' must be a single-channel 16-bit PNG (metres x {DEPTH_SCALE:g}), "
            f"found {info.channels} channel(s), {info.bit_depth}-bit"
        )
    return arr.astype(np.float32) / DEPTH_SCALE


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """Instance map PNG (8/16-bit, one channel; k+1 = the object of label row k, 0 = none) -> int32 [H,W]."""
    arr, info = read_image(path)
    if arr.ndim != 2 or info.stored_channels != 1:
        raise DataError(
            f"instance mask '{path}' must be a single-channel 8- or 16-bit PNG of object ids "
            f"(0 = background, k+1 = label row k), found {info.stored_channels} channels"
        )
    return arr.astype(np.int32)


def _to_array(image) -> np.ndarray:
    """Accept HxW / HxWx3 arrays or [C,H,W] / [1,C,H,W] tensors; floats are taken as [0,1]."""
    if hasattr(image, "detach"):
        t = image.detach().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"write_image takes one image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        image = t.numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise ValueError(f"cannot write an image of dtype {arr.dtype} and shape {arr.shape}")
    return arr


def encode_png(image) -> bytes:
    """PNG bytes of an RGB/gray array or tensor (floats in [0,1] become 8-bit)."""
    import cv2

    arr = _to_array(image)
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_image(path: str | os.PathLike, image) -> Path:
    """Write an image as PNG atomically (no half-written file is ever visible)."""
    from fusionlab.artifacts import atomic_write_bytes

    return atomic_write_bytes(path, encode_png(image))


def write_depth(path: str | os.PathLike, depth_m) -> Path:
    """Write metric depth as a 16-bit PNG (metres x 256, 0 = invalid), atomically."""
    arr = np.asarray(depth_m.detach().cpu().numpy() if hasattr(depth_m, "detach") else depth_m, np.float64)
    arr = np.squeeze(arr)
    return write_image(path, np.round(np.clip(arr * DEPTH_SCALE, 0, 65535)).astype(np.uint16))
