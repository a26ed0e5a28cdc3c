"""Pretrained parts: what a stage loads from outside the run, whether it is here, and what was random.

The one interface: a stage module may define

    def pretrained_parts(cfg: Config) -> list[Part]: ...

listing every pretrained component that config makes it load (CLIP, captioner, depth backbone,
VGG, detector), with `spec=None` for a part that starts from random weights. Everything else
derives from that list:

- `preflight(steps)`: before any stage starts, `fusionlab run` checks every part of every stage
  that will run and stops with one message listing each missing part and its fetch command;
- `fusionlab weights list`: each part and whether it is present;
- `manifest_records(module, cfg)`: the manifest's `pretrained` list (source: `random-init`, a hub
  id with its revision, a local path, or an upstream artifact; and the weights' sha256);
- `warn_random(module, cfg)`: one warning per random part when the stage starts;
- `random_notices(manifests)`: the notice `fusionlab run`'s summary and the report show.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from fusionlab.weights import Source, hub_revision, online_allowed, weight_files

log = logging.getLogger("fusionlab.weights")


@dataclass(frozen=True)
class Part:
    """One pretrained component of a stage: enough to check it, fetch it and record it."""

    component: str               # what it is: "CLIP ViT-B-32", "VGG-19"
    key: str                     # the stage config key that chooses it: "model.clip.pretrained"
    spec: str | None             # what the config asks for; None = random initialisation
    role: str                    # what it does in the method, for the notice: "text guidance"
    if_random: str               # what random weights mean for the numbers
    source: Source | None = None  # where pretrained weights live (None: random, rules or upstream)
    upstream: str | None = None   # an upstream model folder that carries this part (its config.json says how)
    has_weights: bool = True     # False: a rule-based substitute (the depth-template captioner)
    instead: str = ""            # the override that runs without it (default: `<key>=null`, random weights)

    @property
    def random(self) -> bool:
        if self.upstream is not None:
            return _upstream_config(self.upstream).get("source", {}).get("pretrained", "?") is None
        return self.has_weights and self.spec is None

    def missing(self) -> bool:
        """True when the weights are neither here nor downloadable now."""
        if self.source is None:
            return False
        found = self.source.find()
        if found is not None and not self.source.pickles and found.suffix == ".pt":
            return True  # a pickle: `fusionlab weights import` it first
        return found is None and not (online_allowed() and self.source.online is not None)

    def notice(self) -> str:
        return f"{self.role} used a randomly initialised {self.component}: {self.if_random}"

    def record(self) -> dict:
        """The manifest entry: source, hub id + revision or local path, weights sha256."""
        out = {"component": self.component, "key": self.key, "wants": self.spec, "random": self.random}
        if self.upstream is not None:
            config = _upstream_config(self.upstream)
            out.update({"source": "upstream", "path": self.upstream, "built_from": config.get("source"),
                        "weights_sha256": config.get("weights_sha256")})
        elif not self.has_weights:
            out["source"] = "rules (no weights)"
        elif self.spec is None or self.source is None:
            out.update({"source": "random-init", "weights_sha256": None})
        else:
            path = self.source.find()
            files = {p.name: _sha256(p) for p in weight_files(path)} if path is not None else {}
            from_hub = self.source.hub_id is not None and not Path(self.spec).expanduser().exists()
            kind = "hub" if from_hub else ("url" if self.source.url else "local")
            out.update({"source": kind, "hub_id": self.source.hub_id if from_hub else None,
                        "revision": hub_revision(path) if (from_hub and path is not None) else None,
                        "url": self.source.url, "path": str(path) if path is not None else None, "files": files,
                        "weights_sha256": _combined(files)})
            if path is not None and (path / "imported.json").is_file():  # an ultralytics .pt converted once
                out["imported"] = json.loads((path / "imported.json").read_text())
        if out["random"]:
            out["notice"] = self.notice()
        return out


def _upstream_config(folder: str) -> dict:
    try:
        return json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _sha256(path: Path) -> str:
    from fusionlab.artifacts import sha256_file

    return sha256_file(path)


def _combined(files: dict[str, str]) -> str | None:
    if not files:
        return None
    if len(files) == 1:
        return next(iter(files.values()))
    return hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(files.items())).encode()).hexdigest()


# --------------------------------------------------------------------------- per stage


def stage_parts(module, cfg) -> list[Part]:
    """The parts a stage module reports for `cfg` (none when it defines no `pretrained_parts`)."""
    fn = getattr(module, "pretrained_parts", None)
    return list(fn(cfg)) if fn is not None else []


def manifest_records(module, cfg) -> list[dict]:
    return [part.record() for part in stage_parts(module, cfg)]


def warn_random(module, cfg, stage: str) -> list[str]:
    """Log one warning per part of this stage that runs on random weights; returns the notices."""
    notices = [part.notice() for part in stage_parts(module, cfg) if part.random]
    for text in notices:
        log.warning("stage %s, RANDOM WEIGHTS: %s", stage, text)
    return notices


def preflight(steps) -> None:
    """Before any stage of a pipeline starts: every part of every stage that will run is here."""
    check_parts([(s.spec.name, s.spec.module, s.spec.module.Config.model_validate(s.spec.resolved))
                 for s in steps if s.action == "run"])


def check_parts(stages: list[tuple]) -> None:
    """(name, stage module, cfg) triples: raise one WeightsMissingError listing each missing part
    (neither here nor downloadable now), the command that fetches it and the override instead."""
    from fusionlab.errors import WeightsMissingError

    problems = []
    for name, module, cfg in stages:
        for part in stage_parts(module, cfg):
            if part.missing():
                problems.append(
                    f"  - stage '{name}': {part.component} ({part.key}: {part.spec}), wanted for {part.role}\n"
                    f"      fetch:  {part.source.fetch}\n"
                    f"      or set: {name}.{part.key}=/path/to/local/weights   "
                    f"(without it: {name}.{part.instead or part.key + '=null (random weights)'})")
    if problems:
        mode = "offline" if not online_allowed() else "no download source"
        raise WeightsMissingError(
            f"{len(problems)} pretrained part(s) are missing ({mode}; weights cache {_cache()}); no stage was started:\n"
            + "\n".join(problems)
            + "\nRun the fetch commands on a machine with internet (then copy the cache folder here), or set the keys.")


def _cache() -> Path:
    from fusionlab.weights import cache_dir

    return cache_dir()


# --------------------------------------------------------------------------- notices


def random_notices(manifests: dict[str, dict]) -> list[str]:
    """One line per random component (stage name -> manifest), naming the stages it ran in."""
    seen: dict[str, list[str]] = {}
    for stage, manifest in manifests.items():
        for rec in (manifest or {}).get("pretrained", []):
            if rec.get("random") and rec.get("notice"):
                seen.setdefault(rec["notice"], []).append(stage)
    return [f"{text} (stage{'s' if len(stages) > 1 else ''} {', '.join(stages)})" for text, stages in seen.items()]


def notice_block(manifests: dict[str, dict]) -> str:
    """The run summary's notice (empty when every paper component had pretrained weights)."""
    lines = random_notices(manifests)
    if not lines:
        return ""
    return "\n".join(["", "", "**Random weights.** These numbers test the mechanism, not the papers' pretrained "
                       "components:", "", *(f"- {line}" for line in lines)])


# --------------------------------------------------------------------------- the parts


def clip_part(cfg, key: str = "model.clip", role: str = "text guidance") -> Part:
    """The CLIP a ClipConfig asks for (random when `pretrained` is null)."""
    from fusionlab.models.text import clip_source

    name = "tiny CLIP" if cfg.model == "tiny" else f"CLIP {cfg.model}"
    spec = cfg.model if cfg.model.startswith("hf-hub:") else cfg.pretrained
    return Part(name, f"{key}.model" if cfg.model.startswith("hf-hub:") else f"{key}.pretrained", spec, role,
                "it tests the mechanism, not CLIP's semantics", source=clip_source(cfg))


def upstream_clip_part(folder: str, key: str, role: str) -> Part:
    """The CLIP stage 3 saved as `clip/`, read by a later stage (its config.json records how it was built)."""
    name = _upstream_config(folder).get("name")
    component = "tiny CLIP" if name == "tiny" else (f"CLIP {name}" if name else "CLIP of stage 3 (clip/)")
    return Part(component, key, folder, role, "it tests the mechanism, not CLIP's semantics", upstream=folder)


def detector_part(spec: str | None, key: str, role: str) -> Part:
    """A YOLO detector's starting weights: an imported ultralytics release, a detector/ folder, or random."""
    from fusionlab.weights import ultralytics_source

    return Part("YOLO detector", key, spec, role,
                "mAP comes from detectors trained from scratch on this data, not from pretrained (COCO) weights",
                source=ultralytics_source(spec) if spec else None)
