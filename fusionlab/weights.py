"""One resolver for every pretrained part: explicit local path > local caches > hub download.

Configs say `pretrained: <hub id | local path | null>`; `null` means random initialisation.
A `Source` says where one part's weights live and how a user fetches them:

- `hub_source(spec)`: a Hugging Face repo (transformers BLIP / depth models, `hf-hub:` CLIPs);
- `open_clip_source(model, tag)`: an open_clip tag (`ViT-B-32` + `openai`) -> its hub repo + file;
- `url_source(url, spec)`: a file behind a URL (torchvision's VGG-19, kept in torch.hub's layout);
- `ultralytics_source(name)`: a YOLO release imported once by `fusionlab weights import --trust`.

Each looks in the same places: the path itself, the fusionlab cache ($FUSIONLAB_WEIGHTS, laid
out as `hf download --local-dir` / torch.hub leave it), then the library's own cache (the
Hugging Face hub cache, torch.hub's checkpoints). Offline and not found: one WeightsMissingError
that names the part, its config key, and the exact command that fetches it.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fusionlab.errors import WeightsMissingError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
ULTRALYTICS_RELEASE = "https://github.com/ultralytics/assets/releases/download/v8.4.0"


def cache_dir() -> Path:
    """Local weights cache: $FUSIONLAB_WEIGHTS, else ~/.cache/fusionlab/weights."""
    return Path(os.environ.get("FUSIONLAB_WEIGHTS", Path.home() / ".cache" / "fusionlab" / "weights"))


def cache_path(spec: str) -> Path:
    """Where a hub id is looked for in the local cache (`org/name` -> `<cache>/org--name`)."""
    return cache_dir() / re.sub(r"[^A-Za-z0-9_.-]+", "--", spec)


def online_allowed() -> bool:
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUSIONLAB_OFFLINE", "YOLO_OFFLINE")
    return not any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in offline)


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(WEIGHT_SUFFIXES)


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a part: the file itself, or a folder's top-level weight files."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    return []


@dataclass(frozen=True)
class Source:
    """Where the weights of one part live, and the command that puts them there."""

    spec: str                      # what the config asked for
    local: Path                    # where the fusionlab cache keeps them (a folder or a file)
    fetch: str                     # shell command(s) that fetch them on a machine with internet
    hub_id: str | None = None      # Hugging Face repo, when they come from the hub
    files: tuple[str, ...] = ()    # files needed from `hub_id` (empty: the whole repo)
    url: str | None = None         # direct download URL, when not from the hub
    online: str | None = None      # what the library is given to download it itself (None: no download)
    pickles: bool = True           # False: a `.pt` found here must be imported first (ultralytics)

    def find(self) -> Path | None:
        """A local copy (the path itself, the fusionlab cache, the library's cache), or None."""
        explicit = Path(self.spec).expanduser()
        if explicit.exists():
            return explicit
        for candidate in (self.local, self._library_cache()):
            if candidate is not None and _complete(candidate, self.files):
                return candidate
        return None

    def _library_cache(self) -> Path | None:
        if self.hub_id:
            return _hub_cache(self.hub_id, self.files)
        if self.url:
            import torch

            path = Path(torch.hub.get_dir()) / "checkpoints" / Path(self.url).name
            return path if path.is_file() else None
        return None

    def resolve(self, *, what: str, key: str) -> str:
        """A local path; the name to download when online; else the one clear error."""
        found = self.find()
        if found is not None:
            return str(found)
        if _looks_like_path(self.spec) and self.online is None:
            raise WeightsMissingError(f"{what}: weights path '{self.spec}' (config key '{key}') does not exist. "
                                      f"{self.fix(key)}")
        if online_allowed() and self.online is not None:
            return self.online
        why = "downloads are disabled (offline)" if self.online is not None else "fusionlab never downloads them at run time"
        raise WeightsMissingError(
            f"{what}: pretrained weights '{self.spec}' (config key '{key}') are not a local path, not in the "
            f"cache ({self.local}), and {why}. {self.fix(key)}")

    def fix(self, key: str) -> str:
        return (f"Fix: on a machine with internet run `{self.fetch}` (copy {cache_dir()} here if that is another "
                f"machine), or set `{key}: /path/to/weights`, or `{key}: null` to start from random weights.")


def _complete(path: Path, files: tuple[str, ...]) -> bool:
    if path.is_file():
        return True
    if not path.is_dir():
        return False
    if files:
        return all((path / f).is_file() for f in files)
    return bool(weight_files(path))


def _hub_cache(repo_id: str, files: tuple[str, ...]) -> Path | None:
    """The repo's snapshot folder in the Hugging Face hub cache, when the needed files are there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for name in files or ("config.json", "open_clip_config.json"):
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            folder = Path(hit).parent
            if _complete(folder, files):
                return folder
    return None


def hub_revision(path: str | Path) -> str | None:
    """The commit a hub download came from: `hf download --local-dir` metadata, or the snapshot name."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    meta = folder / ".cache" / "huggingface" / "download"
    for candidate in ([meta / f"{path.name}.metadata"] if path.is_file() else sorted(meta.glob("*.metadata"))):
        try:
            commit = candidate.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            continue
        if commit:
            return commit
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    return None


# --------------------------------------------------------------------------- sources by library


def local_source(path: str) -> Source:
    """Weights the config names by path: nothing to fetch, only to check."""
    return Source(path, Path(path).expanduser(), f"(a local path: put the weights at {path})")


def hub_source(spec: str, files: tuple[str, ...] = ()) -> Source:
    """A Hugging Face repo id (or a local folder) as transformers / open_clip `hf-hub:` load it."""
    if _looks_like_path(spec) or Path(spec).expanduser().exists():
        return local_source(spec)
    local = cache_path(spec)
    wanted = " ".join(files)
    fetch = f"hf download {spec}{' ' + wanted if wanted else ''} --local-dir {local}"
    return Source(spec, local, fetch, hub_id=spec, files=files, online=spec)


def open_clip_source(model: str, tag: str) -> Source:
    """An open_clip pretrained tag (e.g. ViT-B-32 + openai): the hub repo and file open_clip would fetch."""
    import open_clip

    if Path(tag).expanduser().exists() or _looks_like_path(tag):
        return local_source(tag)
    cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:  # "org/repo/" (open_clip's default file) or "org/repo/file"
        parts = hub.split("/")
        repo, file = "/".join(parts[:2]), "/".join(parts[2:]) or "open_clip_model.safetensors"
        source = hub_source(repo, (file,))
        return Source(tag, source.local, source.fetch, hub_id=repo, files=(file,), online=tag)
    if cfg.get("url"):
        source = url_source(cfg["url"], tag)
        return Source(tag, source.local, source.fetch, url=cfg["url"], online=tag)
    raise WeightsMissingError(f"open_clip has no pretrained tag '{tag}' for '{model}'; "
                              f"known tags: {', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'}")


def url_source(url: str, spec: str) -> Source:
    """A file downloaded from `url`, kept where torch.hub keeps it (`<cache>/torch/hub/checkpoints/`)."""
    local = cache_dir() / "torch" / "hub" / "checkpoints" / Path(url).name
    return Source(spec, local, f"curl -L --create-dirs -o {local} {url}", url=url, online=spec)


def torchvision_source(weights_enum, spec: str) -> Source:
    """A torchvision weights name (e.g. VGG19_Weights + IMAGENET1K_V1), or a local file."""
    if Path(spec).expanduser().exists() or _looks_like_path(spec):
        return local_source(spec)
    try:
        url = weights_enum[spec].url
    except KeyError:
        from fusionlab.errors import ConfigError

        raise ConfigError(f"'{spec}' is not a torchvision weights name for {weights_enum.__name__}; use one of "
                          f"{', '.join(w.name for w in weights_enum)} or a local file") from None
    return url_source(url, spec)


def ultralytics_source(name: str) -> Source:
    """A YOLO release (`yolov8n`) converted once into `<cache>/yolov8n/` by `fusionlab weights import`."""
    stem = Path(name).name.removesuffix(".pt")
    if Path(name).expanduser().is_dir() or (name.startswith((".", "/", "~")) and not name.endswith(".pt")):
        return local_source(name)
    fetch = (f"curl -L -o {stem}.pt {ULTRALYTICS_RELEASE}/{stem}.pt && "
             f"fusionlab weights import {stem}.pt --trust")
    return Source(name, cache_path(stem), fetch, pickles=False)


# --------------------------------------------------------------------------- errors while loading


def resolve(spec: str | None, *, what: str, key: str = "pretrained") -> str | None:
    """Resolve a hub id / local path to a local path, a hub id to download, or None (random init)."""
    if spec is None or spec == "":
        return None
    return hub_source(spec).resolve(what=what, key=key)


def is_local(resolved: str | None) -> bool:
    return resolved is not None and Path(resolved).exists()


def _weights_problem(exc: BaseException) -> bool:
    """A hub, network or missing-file error anywhere in the exception chain."""
    from urllib.error import URLError

    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
        hub_errors: tuple = (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled)
    except ImportError:  # pragma: no cover
        hub_errors = ()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (*hub_errors, URLError, ConnectionError, FileNotFoundError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def loading(what: str, key: str, spec: str | None, source: Source | None = None):
    """Turn a library's download/lookup failure into one clear WeightsMissingError.

    Hub and network errors (huggingface_hub's own types, urllib, connection errors) anywhere in
    the exception chain, and any load failure of weights from a local path, name the part, the
    config key and the fix; other errors pass through untouched.
    """
    try:
        yield
    except WeightsMissingError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        if spec is None:
            raise
        source = source or hub_source(spec)
        local = source.find()
        if not (_weights_problem(exc) or local is not None):
            raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        where = f" from '{local}'" if local is not None else ""
        raise WeightsMissingError(f"{what}: could not load pretrained weights '{spec}'{where} (config key '{key}'): "
                                  f"{first}. {source.fix(key)}") from None
