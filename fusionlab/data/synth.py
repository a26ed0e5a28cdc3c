"""Synthetic IR/VIS road scenes with metric depth, boxes and a scene description.

A pinhole camera at height `h` looks along a flat ground plane, so a ground pixel in row `y`
below the horizon row `y_h` lies at depth Z = f * h / (y - y_h): depth grows toward the horizon,
and every object standing at distance Z has its feet on row y_h + f*h/Z and a height of
f * H_obj / Z pixels. Objects are drawn far to near from simple part shapes.

The two modalities see different things, as real sensors do:
- thermal (IR): warm people, animals and running cars with smooth thermal texture; a cool sky,
  a cool road and little fine texture; signs, lane markings and parked cold cars blend into
  their surroundings;
- visible (VIS): day or night; at night only the ego headlights, street lights and lit windows
  light the scene, dark-clad people and animals outside the light vanish in sensor noise, and
  oncoming headlights flood a glare region around them; signs and lane markings are bright.
So fusion has something real to add over either input, and each object records in which
modality it is measurable (`visible_in`).

Written in the generic layout (`ir/ vi/ depth/ labels/ masks/ scenes/ classes.txt captions.jsonl`),
so every stage reads synthetic and real data through the same code. `masks/<id>.png` is the
instance map (16-bit; pixel value k+1 = the object of label row k, 0 = background), used with
`visible_in` only for scoring (object contrast retention), never as a model input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionlab.errors import DataError

CLASSES = ["person", "car", "animal", "sign"]
MAX_DEPTH_M = 120.0  # farther ground counts as "no measurement" (0), like a LiDAR's range
VISIBLE_CONTRAST = 0.06  # mean object-vs-surround difference that counts as visible
MARKER = "synth.json"
GENERATOR_VERSION = 2  # 2: + masks/ (instance maps); every other file as in version 1

# physical sizes (metres): height, width as seen by the camera
SIZES = {"person": (1.75, 0.55), "car": (1.5, 1.8), "animal": (1.15, 1.4), "sign": (0.75, 0.75)}


@dataclass
class Camera:
    width: int
    height: int
    horizon: float  # row of the horizon (pixels from the top)
    focal: float  # pixels
    cam_height: float  # metres above the ground

    def ground_depth(self) -> np.ndarray:
        """Depth (m) of the ground plane at every row's pixel centre; 0 at and above the horizon."""
        dy = np.arange(self.height, dtype=np.float64) + 0.5 - self.horizon
        z = np.where(dy > 0, self.focal * self.cam_height / np.maximum(dy, 1e-6), 0.0)
        return np.where(z > MAX_DEPTH_M, 0.0, z)

    def project(self, x: float, z: float, height_m: float, width_m: float, lift_m: float = 0.0):
        """Pixel box (x0, y0, x1, y1) of an upright object of the given size at ground point (x, z)."""
        foot = self.horizon + self.focal * (self.cam_height - lift_m) / z
        cx = self.width / 2 + self.focal * x / z
        h, w = self.focal * height_m / z, self.focal * width_m / z
        return cx - w / 2, foot - h, cx + w / 2, foot


@dataclass
class Thing:
    """One object to draw: class, ground position, look, and (after drawing) its box."""

    cls: str
    x: float  # lateral position (m), + is right
    z: float  # distance (m)
    look: dict = field(default_factory=dict)
    box: tuple = ()  # pixel (x0, y0, x1, y1) of the drawn mask
    visible_in: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int = 5) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] (thermal texture has no fine grain)."""
    import cv2

    h, w = max(shape[0], 1), max(shape[1], 1)
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(-2, 2) / 2


def _window(cam: Camera, box):
    """Integer pixel window of a float box and the normalised (u, v) coordinates inside it."""
    x0, y0, x1, y1 = box
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), cam.width)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), cam.height)
    if c1 <= c0 or r1 <= r0:
        return None
    u = (np.arange(c0, c1) + 0.5 - x0) / max(x1 - x0, 1e-6)
    v = (np.arange(r0, r1) + 0.5 - y0) / max(y1 - y0, 1e-6)
    return (slice(r0, r1), slice(c0, c1)), u[None, :], v[:, None]


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


# part shapes: name -> boolean mask over the object's (u, v) window


def _person_parts(u, v, look):
    stride = look["stride"]
    head = _ellipse(u, v, 0.5, 0.07, 0.16, 0.07)
    torso = (np.abs(u - 0.5) < 0.3) & (v >= 0.13) & (v < 0.56)
    legs = (v >= 0.56) & (
        (np.abs(u - 0.5 + 0.12 + stride * (v - 0.56)) < 0.1) | (np.abs(u - 0.5 - 0.12 - stride * (v - 0.56)) < 0.1)
    )
    return {"head": head, "torso": torso & ~head, "legs": legs}


def _car_parts(u, v, look):
    cabin = (v >= 0.05) & (v < 0.42) & (np.abs(u - 0.5) < 0.34 + 0.12 * (v - 0.05) / 0.37)
    glass = (v >= 0.1) & (v < 0.38) & (np.abs(u - 0.5) < 0.28 + 0.1 * (v - 0.1) / 0.28)
    body = (v >= 0.42) & (v < 0.88) & (np.abs(u - 0.5) <= 0.5)
    wheels = (v >= 0.8) & ((np.abs(u - 0.15) < 0.1) | (np.abs(u - 0.85) < 0.1))
    lights = (v >= 0.5) & (v < 0.62) & ((np.abs(u - 0.11) < 0.08) | (np.abs(u - 0.89) < 0.08))
    return {"cabin": cabin & ~glass, "glass": glass, "body": body & ~lights, "lights": lights & body, "wheels": wheels}


def _animal_parts(u, v, look):
    if look["facing_left"]:
        u = 1.0 - u
    body = _ellipse(u, v, 0.45, 0.42, 0.33, 0.15)
    neck = (np.abs(u - 0.76 - 0.3 * (0.4 - v)) < 0.05) & (v > 0.15) & (v < 0.42)
    head = _ellipse(u, v, 0.85, 0.13, 0.09, 0.08)
    legs = (v >= 0.5) & (
        (np.abs(u - 0.2) < 0.035) | (np.abs(u - 0.3) < 0.035) | (np.abs(u - 0.62) < 0.035) | (np.abs(u - 0.7) < 0.035)
    )
    return {"body": body | neck, "head": head, "legs": legs & ~body}


def _sign_parts(u, v, look):
    shape = look["shape"]
    if shape == "circle":
        plate = _ellipse(u, v, 0.5, 0.5, 0.5, 0.5)
        inner = _ellipse(u, v, 0.5, 0.5, 0.36, 0.36)
    elif shape == "triangle":
        plate = (v <= 1.0) & (np.abs(u - 0.5) <= 0.5 * v)
        inner = (v <= 0.85) & (v >= 0.25) & (np.abs(u - 0.5) <= 0.5 * v - 0.12)
    else:  # diamond
        plate = np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5
        inner = np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.36
    return {"rim": plate & ~inner, "face": inner}


PARTS = {"person": _person_parts, "car": _car_parts, "animal": _animal_parts, "sign": _sign_parts}


# ----------------------------------------------------------------------------- the scene


class _Scene:
    """Renders one scene into IR, VIS (linear, before noise), depth and an instance map."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], night: bool):
        W, H = size
        self.rng, self.night = rng, night
        self.cam = Camera(
            W, H, horizon=H * rng.uniform(0.36, 0.46), focal=W * rng.uniform(0.9, 1.1), cam_height=rng.uniform(1.3, 1.7)
        )
        self.road_half = rng.uniform(3.2, 4.8)
        self.curve = rng.uniform(-0.004, 0.004)  # road centre x = curve * z^2
        self.ambient = rng.uniform(0.05, 0.09) if night else 1.0
        self.ir = np.zeros((H, W), np.float32)
        self.vi = np.zeros((H, W, 3), np.float32)
        self.depth = np.zeros((H, W), np.float32)
        self.instance = np.zeros((H, W), np.int16)
        self.glows: list[tuple[float, float, float, float, tuple]] = []  # (x, y, radius, strength, rgb)
        side, first = rng.choice([-1.0, 1.0]), rng.uniform(6, 20)
        lamp_z = [first + 22 * k for k in range(4)] if (not night or rng.random() < 0.85) else []
        self.lamps = [(float(self.road_centre(z)) + side * (self.road_half + 1.2), z) for z in lamp_z]

    # -- lighting ------------------------------------------------------------
    def light(self, x, z):
        """Scene illumination at ground point(s) (x, z): ambient + street lamps + ego headlights."""
        if not self.night:
            return np.ones_like(np.asarray(z, np.float64))
        x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
        total = self.ambient + np.zeros_like(z)
        for lx, lz in self.lamps:
            total = total + 0.9 * np.exp(-((x - lx) ** 2 + (z - lz) ** 2) / (2 * 5.0**2))
        beam = np.exp(-((x / (0.3 * z + 1.0)) ** 2)) * np.minimum(1.0, (7.0 / np.maximum(z, 1e-3)) ** 2)
        return total + 1.1 * beam

    def road_centre(self, z):
        return self.curve * np.asarray(z) ** 2

    # -- background ----------------------------------------------------------
    def background(self):
        cam, rng, night = self.cam, self.rng, self.night
        H, W = cam.height, cam.width
        rows = np.arange(H, dtype=np.float32)[:, None] + 0.5
        t = np.clip(rows / max(cam.horizon, 1), 0, 1)  # 0 top .. 1 horizon
        if night:
            top, low = np.array([0.01, 0.01, 0.03]), np.array([0.07, 0.06, 0.06])
        else:
            top, low = np.array([0.35, 0.55, 0.9]), np.array([0.75, 0.82, 0.9])
        sky_vi = (top + (low - top) * t[..., None]) * np.ones((1, W, 1))
        sky_ir = rng.uniform(0.06, 0.12) + 0.08 * t * np.ones((1, W))
        self.vi[:] = sky_vi
        self.ir[:] = sky_ir + 0.02 * _smooth_noise(rng, (H, W), 3)
        self.skyline()
        # ground plane
        zrow = cam.ground_depth()
        ground = rows[:, 0] > cam.horizon
        # depth used for shading; ground beyond MAX_DEPTH_M (depth 0 = no measurement) is shaded as far away
        zg = np.where(ground, np.where(zrow > 0, zrow, 2 * MAX_DEPTH_M), 1.0)[:, None]
        xg = (np.arange(W, dtype=np.float64)[None, :] + 0.5 - W / 2) * zg / cam.focal
        lat = xg - self.road_centre(zg)
        road = np.abs(lat) <= self.road_half
        footprint = zg / cam.focal  # metres per pixel, for anti-aliased lines
        edge = np.clip((0.12 - np.abs(np.abs(lat) - self.road_half + 0.25)) / footprint + 0.5, 0, 1)
        dash = (np.mod(zg, 9.0) < 4.0).astype(np.float64)
        centre = np.clip((0.07 - np.abs(lat)) / footprint + 0.5, 0, 1) * dash
        marking = np.maximum(edge, centre)
        grain = rng.standard_normal((H, W)) * 0.04
        asphalt = rng.uniform(0.22, 0.3) + grain
        verge = np.array([0.18, 0.3, 0.1]) if not night else np.array([0.16, 0.2, 0.12])
        albedo = np.where(road[..., None], asphalt[..., None] * np.ones(3), verge + 1.5 * grain[..., None])
        albedo = albedo * (1 - marking[..., None]) + 0.85 * marking[..., None]
        lit = self.light(xg, zg)[..., None]
        gain = 1.0 + (2.0 * marking[..., None] if night else 0.0)  # retroreflective paint
        ground_vi = np.clip(albedo * lit * gain, 0, None)
        road_ir = (0.3 if night else 0.42) + 0.03 * _smooth_noise(rng, (H, W), 4)
        ground_ir = np.where(road, road_ir, road_ir - 0.04) + 0.004 * marking
        g = np.broadcast_to(ground[:, None], (H, W))
        self.vi[g] = ground_vi[g]
        self.ir[g] = ground_ir[g]
        self.depth[:] = np.where(g, np.broadcast_to(zrow[:, None], (H, W)), self.depth)
        # street-light poles: unlabelled clutter, lamps glow at night
        for lx, lz in self.lamps:
            self.pole(lx, lz, 6.5, 0.15, lamp=True)

    def skyline(self):
        """Buildings on the horizon: far, flat, some windows lit at night."""
        cam, rng = self.cam, self.rng
        x = 0
        while x < cam.width:
            w = int(rng.integers(cam.width // 12, cam.width // 4))
            z = rng.uniform(60, 110)
            h_m = rng.uniform(4, 25) if rng.random() < 0.7 else 0.0
            if h_m > 0:
                x0, y0, x1, y1 = x, cam.horizon - cam.focal * h_m / z, x + w, cam.horizon
                win = _window(cam, (x0, y0, x1, y1))
                if win is not None:
                    sl, u, v = win
                    tone = rng.uniform(0.25, 0.5)
                    windows = (np.mod(u * w / 3.0, 1.0) < 0.4) & (np.mod(v * (y1 - y0) / 3.0, 1.0) < 0.4)
                    lit = windows & (rng.random(windows.shape) < (0.35 if self.night else 0.0))
                    base = np.array([tone, tone * 0.95, tone * 0.9]) * (self.ambient if self.night else 1.0)
                    self.vi[sl] = np.where(lit[..., None], np.array([0.9, 0.75, 0.4]), base)
                    self.ir[sl] = rng.uniform(0.2, 0.3) + 0.05 * lit
                    self.depth[sl] = z
            x += w

    def pole(self, x, z, height_m, width_m, lamp=False):
        if z <= 1.0:
            return
        box = self.cam.project(x, z, height_m, width_m)
        win = _window(self.cam, box)
        if win is None:
            return
        sl, _, _ = win
        self.vi[sl] = np.array([0.35, 0.35, 0.37]) * float(self.light(x, z)) * (0.6 if self.night else 1.0)
        self.ir[sl] = self.ir[sl] * 0.5 + 0.5 * (0.3 if self.night else 0.4)
        self.depth[sl] = z
        if lamp and self.night:
            cx, top = (box[0] + box[2]) / 2, box[1]
            self.glows.append((cx, top, 1.0 + self.cam.focal * 0.5 / z, 1.5, (1.0, 0.85, 0.55)))
            r0 = max(int(top), 0)
            if r0 < self.cam.height:
                self.ir[r0 : r0 + 2, sl[1]] = 0.55

    # -- objects -------------------------------------------------------------
    def draw(self, thing: Thing, index: int) -> None:
        cam, rng, look = self.cam, self.rng, thing.look
        h_m, w_m = SIZES[thing.cls]
        lift = look.get("lift", 0.0)
        box = cam.project(thing.x, thing.z, h_m, w_m, lift)
        win = _window(cam, box)
        if win is None:
            return
        sl, u, v = win
        parts = PARTS[thing.cls](u, v, look)
        mask = np.zeros((v.shape[0], u.shape[1]), bool)
        for m in parts.values():
            mask |= m
        if not mask.any():
            return
        rows, cols = np.nonzero(mask)
        thing.box = (
            sl[1].start + cols.min(),
            sl[0].start + rows.min(),
            sl[1].start + cols.max() + 1,
            sl[0].start + rows.max() + 1,
        )
        if thing.cls == "sign":  # pole below the plate, then the plate
            self.pole(thing.x, thing.z + 0.01, lift, 0.08)
        ir_bg = float(np.median(self.ir[sl][mask]))
        texture = _smooth_noise(rng, mask.shape, 4)
        light = float(self.light(thing.x, thing.z))
        ir_patch, vi_patch = self.ir[sl], self.vi[sl]
        for name, m in parts.items():
            if not m.any():
                continue
            temp, albedo, emit = self.material(thing, name, ir_bg)
            ir_patch[m] = (temp + look.get("ir_texture", 0.03) * texture)[m]
            colour = np.asarray(albedo) * light * (3.0 if thing.cls == "sign" and self.night else 1.0)
            colour = colour + np.asarray(emit)
            fine = 1.0 + 0.08 * rng.standard_normal(m.shape)  # VIS keeps fine texture
            vi_patch[m] = (colour[None, None, :] * fine[..., None])[m]
        self.depth[sl][mask] = thing.z
        self.instance[sl][mask] = index + 1
        if thing.cls == "car" and look["headlights"] and self.night:
            x0, y0, x1, y1 = box
            yl = y0 + 0.56 * (y1 - y0)
            radius = 2.0 + cam.focal * 0.9 / thing.z
            for ul in (0.11, 0.89):
                self.glows.append((x0 + ul * (x1 - x0), yl, radius, 2.0, (1.0, 0.97, 0.9)))

    def material(self, thing: Thing, part: str, ir_bg: float):
        """(IR temperature, VIS albedo rgb, VIS emission rgb) of one part."""
        look, night = thing.look, self.night
        zero = (0.0, 0.0, 0.0)
        if thing.cls == "person":
            temp = {"head": 0.95, "torso": 0.8, "legs": 0.76}[part] + look["warmth"]
            albedo = {"head": look["skin"], "torso": look["clothes"], "legs": look["trousers"]}[part]
            return temp, albedo, zero
        if thing.cls == "animal":
            temp = {"body": 0.84, "head": 0.9, "legs": 0.74}[part] + look["warmth"]
            return temp, look["fur"], zero
        if thing.cls == "car":
            if look["cold"]:  # parked for hours: at the temperature of its surroundings
                temp = ir_bg + (-0.04 if part == "glass" else 0.0)
            else:
                temp = {"cabin": 0.55, "glass": 0.3, "body": 0.6, "lights": 0.72, "wheels": 0.78}[part]
                temp += 0.12 if (part == "body" and look["front"]) else 0.0  # engine heat
            albedo = {
                "cabin": look["paint"],
                "glass": (0.08, 0.1, 0.12),
                "body": look["paint"],
                "lights": (0.8, 0.8, 0.8) if look["front"] else (0.6, 0.05, 0.05),
                "wheels": (0.04, 0.04, 0.04),
            }[part]
            emit = zero
            if part == "lights" and not look["cold"] and night:
                emit = (1.0, 1.0, 0.95) if look["front"] else (0.9, 0.08, 0.05)
            return temp, albedo, emit
        # sign: metal plates mirror their cold surroundings in the thermal band
        return ir_bg + 0.005, (look["rim"] if part == "rim" else look["face"]), zero

    # -- finishing -------------------------------------------------------------
    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Glare and lamp glows, sensor blur and noise. Returns display-ready (ir, vi) in [0,1]."""
        import cv2

        cam, rng = self.cam, self.rng
        H, W = cam.height, cam.width
        vi = self.vi.copy()
        if self.glows:
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
            for gx, gy, radius, strength, rgb in self.glows:
                r2 = ((xx - gx) ** 2 + (yy - gy) ** 2) / radius**2
                vi += (strength * np.exp(-r2) + 0.05 * strength / (1.0 + r2))[..., None] * np.asarray(rgb, np.float32)
        vi = np.clip(vi, 0, 1)
        shot, read = (0.012, 0.025) if self.night else (0.002, 0.006)
        vi = vi + rng.standard_normal(vi.shape).astype(np.float32) * np.sqrt(shot * vi + read**2)
        vi = cv2.GaussianBlur(vi.astype(np.float32), (3, 3), 0.5)
        ir = cv2.GaussianBlur(self.ir.astype(np.float32), (5, 5), 1.0)  # thermal optics are soft
        ir = ir + 0.008 * rng.standard_normal(ir.shape) + 0.006 * rng.standard_normal((1, W))  # + column pattern
        return np.clip(ir, 0, 1).astype(np.float32), np.clip(vi, 0, 1).astype(np.float32)


def _overlaps(box, boxes, limit=0.3) -> bool:
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    for a0, b0, a1, b1 in boxes:
        iw, ih = min(x1, a1) - max(x0, a0), min(y1, b1) - max(y0, b0)
        if iw > 0 and ih > 0 and iw * ih > limit * min(area, (a1 - a0) * (b1 - b0)):
            return True
    return False


def _plan(scene: _Scene) -> list[Thing]:
    """Choose the objects: where they stand and how they look, with complementary cases built in."""
    rng, cam, night = scene.rng, scene.cam, scene.night
    R = scene.road_half
    things: list[Thing] = []
    boxes: list[tuple] = []

    def place(thing: Thing) -> bool:
        h_m, w_m = SIZES[thing.cls]
        box = cam.project(thing.x, thing.z, h_m, w_m, thing.look.get("lift", 0.0))
        if box[0] < 1 or box[2] > cam.width - 1 or box[1] < 1 or box[3] > cam.height - 1 or box[3] - box[1] < 6:
            return False
        if _overlaps(box, boxes):
            return False
        boxes.append(box)
        things.append(thing)
        return True

    def dark_spot_x(z):  # lateral position far from street lamps, for people hidden in the dark
        return rng.choice([-1, 1]) * (R + rng.uniform(0.5, 3.0)) + float(scene.road_centre(z))

    n = int(rng.integers(2, 7))
    attempts = 0
    while len(things) < n and attempts < 60:
        attempts += 1
        cls = rng.choice(CLASSES, p=[0.4, 0.3, 0.12, 0.18])
        if cls == "person":
            z = rng.uniform(6, 30)
            hidden = night and rng.random() < 0.5
            x = dark_spot_x(z) if hidden else float(scene.road_centre(z)) + rng.uniform(-R - 2.5, R + 2.5)
            dark = hidden or rng.random() < 0.3
            look = {
                "stride": rng.uniform(-0.15, 0.15),
                "warmth": rng.uniform(-0.04, 0.04),
                "skin": tuple(rng.uniform([0.5, 0.35, 0.25], [0.85, 0.65, 0.55])),
                "clothes": tuple(rng.uniform(0.03, 0.08, 3)) if dark else tuple(rng.uniform(0.2, 0.9, 3)),
                "trousers": tuple(rng.uniform(0.03, 0.1, 3)) if dark else tuple(rng.uniform(0.1, 0.5, 3)),
            }
            if hidden:
                look["skin"] = tuple(np.array(look["skin"]) * 0.3)
            thing = Thing("person", x, z, look)
        elif cls == "car":
            z = rng.uniform(9, 45)
            kind = rng.choice(["ahead", "oncoming", "parked"], p=[0.35, 0.35, 0.3])
            lane = {"ahead": R / 2, "oncoming": -R / 2, "parked": rng.choice([-1, 1]) * (R + 1.0)}[kind]
            if kind == "parked" and night and scene.lamps and rng.random() < 0.7:  # parked under a street light
                lamp_x, lamp_z = scene.lamps[int(rng.integers(len(scene.lamps)))]
                z = lamp_z + rng.uniform(-4, 4)
                lane = np.sign(lamp_x - float(scene.road_centre(lamp_z))) * (R + 1.0)
            x = float(scene.road_centre(z)) + lane + rng.uniform(-0.3, 0.3)
            look = {
                "cold": kind == "parked",
                "front": kind == "oncoming",
                "headlights": kind == "oncoming",
                "paint": tuple(rng.uniform(0.1, 0.8, 3)),
            }
            thing = Thing("car", x, z, look)
        elif cls == "animal":
            z = rng.uniform(7, 30)
            x = float(scene.road_centre(z)) + rng.choice([-1, 1]) * (R + rng.uniform(0.5, 4.0))
            look = {
                "facing_left": bool(rng.random() < 0.5),
                "warmth": rng.uniform(-0.05, 0.03),
                "fur": tuple(rng.uniform([0.25, 0.17, 0.08], [0.45, 0.32, 0.18])),
            }
            thing = Thing("animal", x, z, look)
        else:
            z = rng.uniform(7, 35)
            x = float(scene.road_centre(z)) + rng.choice([-1, 1]) * (R + rng.uniform(0.6, 1.5))
            face, rim = (
                [(0.95, 0.95, 0.95), (0.85, 0.1, 0.1)] if rng.random() < 0.5 else [(0.1, 0.25, 0.8), (0.9, 0.9, 0.9)]
            )
            look = {
                "shape": str(rng.choice(["circle", "triangle", "diamond"])),
                "lift": rng.uniform(1.6, 2.2),
                "face": face,
                "rim": rim,
            }
            thing = Thing("sign", x, z, look)
        if place(thing) and cls == "car" and thing.look["headlights"] and night and rng.random() < 0.7:
            # a pedestrian beside the oncoming car, drowned in its glare in VIS, plain in IR
            zp = thing.z - rng.uniform(0.5, 2.0)
            xp = thing.x + rng.choice([-1, 1]) * rng.uniform(1.25, 1.6)
            place(
                Thing(
                    "person",
                    xp,
                    zp,
                    {
                        "stride": rng.uniform(-0.15, 0.15),
                        "warmth": 0.0,
                        "skin": (0.6, 0.45, 0.35),
                        "clothes": tuple(rng.uniform(0.05, 0.3, 3)),
                        "trousers": (0.08, 0.08, 0.1),
                        "glare": True,
                    },
                )
            )
    return things


def _side(scene: _Scene, thing: Thing) -> str:
    lat = thing.x - float(scene.road_centre(thing.z))
    if abs(lat) <= scene.road_half:
        return "on the road, " + ("right lane" if lat >= 0 else "left lane")
    return "right roadside" if lat > 0 else "left roadside"


def _measure_visibility(things: list[Thing], instance: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> None:
    """Visible in a modality = the object's pixels stand out from the mean of its surround by
    VISIBLE_CONTRAST more than the surround's own texture and noise do (any colour channel)."""
    H, W = instance.shape
    for k, t in enumerate(things):
        x0, y0, x1, y1 = t.box
        pad_x, pad_y = max(2, int(0.4 * (x1 - x0))), max(2, int(0.2 * (y1 - y0)))
        sl = (slice(max(y0 - pad_y, 0), min(y1 + pad_y, H)), slice(max(x0 - pad_x, 0), min(x1 + pad_x, W)))
        inside, ring = instance[sl] == k + 1, instance[sl] == 0
        result = {}
        for name, img in (("ir", ir[..., None]), ("vi", vi)):
            if not inside.any() or not ring.any():
                result[name] = False
                continue
            obj, bg = img[sl][inside], img[sl][ring]  # [n, C]
            ref = bg.mean(0)
            excess = np.abs(obj - ref).mean(0) - np.abs(bg - ref).mean(0)
            result[name] = bool(excess.max() >= VISIBLE_CONTRAST)
        t.visible_in = result


def render(seed_or_rng, size: tuple[int, int] = (160, 128), night: bool | None = None) -> dict:
    """Render one scene in memory: ir [H,W], vi [H,W,3] (float32 in [0,1]), depth [H,W] metres,
    instance [H,W] (k+1 where object k is visible), boxes [N,5] YOLO and the scene description."""
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    W, H = size
    if W < 32 or H < 32:
        raise DataError(f"synthetic size {W}x{H} is too small; use at least 32x32")
    night = bool(rng.random() < 0.5) if night is None else night
    scene = _Scene(rng, size, night)
    scene.background()
    things = _plan(scene)
    order = sorted(range(len(things)), key=lambda k: -things[k].z)  # painter's algorithm: far first
    for k in order:
        scene.draw(things[k], k)
    drawn = [k for k in range(len(things)) if things[k].box]
    ir, vi = scene.finish()
    _measure_visibility(things, scene.instance, ir, vi)
    boxes = np.array(
        [
            [
                CLASSES.index(things[k].cls),
                (things[k].box[0] + things[k].box[2]) / 2 / W,
                (things[k].box[1] + things[k].box[3]) / 2 / H,
                (things[k].box[2] - things[k].box[0]) / W,
                (things[k].box[3] - things[k].box[1]) / H,
            ]
            for k in drawn
        ],
        np.float32,
    ).reshape(-1, 5)
    description = {
        "time_of_day": "night" if night else "day",
        "camera": {
            "width": W,
            "height": H,
            "horizon_y": round(scene.cam.horizon, 3),
            "focal_px": round(scene.cam.focal, 3),
            "height_m": round(scene.cam.cam_height, 3),
        },
        "road": {"half_width_m": round(scene.road_half, 2), "curvature": round(scene.curve, 5)},
        "street_lights": [{"lateral_m": round(x, 2), "distance_m": round(z, 2), "lit": night} for x, z in scene.lamps],
        "objects": [
            {
                "class": things[k].cls,
                "box": [round(float(v), 5) for v in boxes[i, 1:]],
                "box_px": [int(v) for v in things[k].box],
                "distance_m": round(things[k].z, 2),
                "lateral_m": round(things[k].x, 2),
                "side": _side(scene, things[k]),
                "state": _state(things[k], night),
                "visible_in": things[k].visible_in,
            }
            for i, k in enumerate(drawn)
        ],
    }
    instance = np.zeros_like(scene.instance)
    for i, k in enumerate(drawn):  # renumber to the order of `boxes`
        instance[scene.instance == k + 1] = i + 1
    return {"ir": ir, "vi": vi, "depth": scene.depth, "instance": instance, "boxes": boxes, "scene": description}


def _state(t: Thing, night: bool) -> str:
    if t.cls == "car":
        if t.look["cold"]:
            return "parked, cold"
        return ("oncoming, headlights on" if night else "oncoming") if t.look["front"] else "driving ahead"
    if t.cls == "sign":
        return f"{t.look['shape']} sign"
    if t.cls == "person" and t.look.get("glare"):
        return "beside oncoming headlights"
    return "walking" if t.cls == "person" else "standing"


def describe(scene: dict) -> str:
    """A depth-aware sentence about the scene, used as the sample's caption."""
    objs = sorted(scene["objects"], key=lambda o: o["distance_m"])
    time = (
        "A night-time road scene" + (" lit by street lights" if scene["street_lights"] else " without street lights")
        if scene["time_of_day"] == "night"
        else "A daytime road scene"
    )
    parts = []
    for o in objs:
        where = o["side"]
        note = ""
        if not o["visible_in"]["vi"] and o["visible_in"]["ir"]:
            note = ", seen only in the thermal image"
        elif o["visible_in"]["vi"] and not o["visible_in"]["ir"]:
            note = ", seen only in the visible image"
        article = "an" if o["class"][0] in "aeiou" else "a"
        parts.append(f"{article} {o['class']} ({o['state']}) {where}, about {o['distance_m']:.0f} m away{note}")
    return time + (": " + "; ".join(parts) if parts else " with no road users") + "."


def generate(out_dir, n: int, seed: int, size: tuple[int, int] = (160, 128), progress: bool = False) -> Path:
    """Write `n` scenes (deterministic by `seed`, each independent of `n`) to `out_dir`, atomically.

    An existing `out_dir` is replaced only if it was written by this generator.
    """
    from fusionlab.artifacts import atomic_dir
    from fusionlab.data.io import DEPTH_SCALE, encode_png

    out = Path(out_dir)
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise DataError(f"'{out}' exists and was not written by `fusionlab data synth`; choose an empty or new folder")
    W, H = size
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="synth", unit="scene")
    with atomic_dir(out) as tmp:
        for sub in ("ir", "vi", "depth", "labels", "masks", "scenes"):
            (tmp / sub).mkdir()
        captions = []
        for i in iterator:
            sid = f"{i:05d}"
            r = render(np.random.default_rng([seed, i]), size)
            # encode_png raises on failure (cv2.imwrite would return False and leave a gap)
            (tmp / "ir" / f"{sid}.png").write_bytes(encode_png(r["ir"]))
            (tmp / "vi" / f"{sid}.png").write_bytes(encode_png(r["vi"]))
            depth = np.round(np.clip(r["depth"] * DEPTH_SCALE, 0, 65535)).astype(np.uint16)
            (tmp / "depth" / f"{sid}.png").write_bytes(encode_png(depth))
            (tmp / "masks" / f"{sid}.png").write_bytes(encode_png(r["instance"].astype(np.uint16)))
            (tmp / "labels" / f"{sid}.txt").write_text(
                "".join(f"{int(b[0])} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}\n" for b in r["boxes"])
            )
            scene = {"id": sid, **r["scene"]}
            (tmp / "scenes" / f"{sid}.json").write_text(json.dumps(scene, indent=1) + "\n")
            captions.append(json.dumps({"id": sid, "caption": describe(scene)}))
        (tmp / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        (tmp / "captions.jsonl").write_text("\n".join(captions) + "\n")
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "generator": "fusionlab.data.synth",
                    "version": GENERATOR_VERSION,
                    "n": n,
                    "seed": seed,
                    "size": [W, H],
                    "classes": CLASSES,
                },
                indent=1,
            )
            + "\n"
        )
    return out
