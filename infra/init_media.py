"""A user's clip or image that starts a video: staged by content hash beside the outputs.

A request names its start as a path or URI (``init_video`` / ``init_image``). Before the request
is planned, :func:`stage_request` copies the file's bytes to ``OUT/inputs/<sha256><ext>`` (once)
and rewrites the field to ``sha256:<hex><ext>``: the video's id then depends on the file's
content, not on where it was, and every worker (on any node) reads the same bytes from the output
store, also when the run is resumed after the original file is gone. The clip's frame count is
fixed in ``init_frames`` at the same time, so the chunk plan is known without reading it again.

:func:`load_frames` gives the frames the video starts with: each scaled (bicubic, PIL) so that
it covers the preset's frame, then centre-cropped to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re

import av
import numpy as np
from PIL import Image

from infra import storage
from models.errors import ConfigError, require
from models.request import GenerationRequest

PREFIX = "sha256:"
INPUTS = "inputs"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_STAGED = re.compile(r"sha256:[0-9a-f]{64}\.[a-z0-9]+")
SCHEMES_ENV = "STREAMINGT2V_INPUT_SCHEMES"  # URI schemes a batch may read inputs from, beside local paths


def is_staged(ref: str) -> bool:
    return bool(_STAGED.fullmatch(ref))


def staged_uri(root: str, ref: str) -> str:
    """Where a staged input lives under the output URI ``root``."""
    return storage.join(root, INPUTS, ref[len(PREFIX):])


def stage_bytes(data: bytes, extension: str, root: str, field: str = "init_video") -> str:
    """Store ``data`` under ``root`` by its SHA-256 (once) and return its reference."""
    extension = extension.lower()
    allowed = VIDEO_EXTENSIONS if field == "init_video" else IMAGE_EXTENSIONS
    require(extension in allowed, field, extension, f"a file ending in one of {list(allowed)}")
    ref = f"{PREFIX}{hashlib.sha256(data).hexdigest()}{extension}"
    uri = staged_uri(root, ref)
    if not storage.exists(uri):
        storage.write_bytes(uri, data)
    return ref


def _read_source(source: str, field: str) -> bytes:
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    schemes = tuple(s.strip() for s in os.environ.get(SCHEMES_ENV, "s3").split(",") if s.strip())
    require(scheme == "" or scheme in schemes, field, source,
            f"a local path or a URI of {', '.join(f'{s}://' for s in schemes)} (others: list them in {SCHEMES_ENV})")
    try:
        return storage.read_bytes(source)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(field, source, "an existing file") from None


def readable_frames(uri: str, field: str = "init_video") -> int:
    """Frames of a staged clip (each decoded), 1 for a staged image (decoded): an unreadable file
    is refused at the boundary, not in a worker."""
    if field == "init_image":
        return len(load_frames(uri, 1, 8, 8, field))
    try:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as f, av.open(f) as container:
            return sum(1 for _ in container.decode(video=0))
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise ConfigError(field, uri, f"a readable video ({type(exc).__name__})") from None


def stage_request(request: GenerationRequest, root: str) -> GenerationRequest:
    """``request`` with its init video or image staged under ``root`` and ``init_frames`` fixed.
    A file is read once, when it is staged (or, for a clip staged by an upload, when its length
    is first needed); a request already staged with its length is only checked to be there."""
    field = "init_video" if request.init_video else "init_image" if request.init_image else None
    if field is None:
        return request
    ref, frames = getattr(request, field), request.init_frames
    fresh = not is_staged(ref)
    if fresh:
        ref = stage_bytes(_read_source(ref, field), os.path.splitext(ref)[1], root, field)
    else:
        require(storage.exists(staged_uri(root, ref)), field, ref, f"an input staged under {root}")
    if fresh or not frames:
        available = readable_frames(staged_uri(root, ref), field)
        frames = frames or min(available, request.num_frames)
        require(frames <= available, "init_frames", request.init_frames, f"at most the {available} frames of {field}")
    return dataclasses.replace(request, **{field: ref, "init_frames": frames})


def load_frames(uri: str, frames: int, height: int, width: int, field: str = "init_video") -> np.ndarray:
    """The first ``frames`` frames (an image: itself) as (frames, height, width, 3) uint8."""
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
        if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            images = [Image.open(io.BytesIO(data)).convert("RGB")]
        else:
            with av.open(io.BytesIO(data)) as container:
                images = []
                for frame in container.decode(video=0):
                    images.append(frame.to_image())
                    if len(images) == frames:
                        break
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ConfigError(field, uri, f"a readable {'image' if field == 'init_image' else 'video'} "
                          f"({type(exc).__name__})") from None
    require(len(images) >= frames, field, uri, f"a file of at least {frames} frames")
    return np.stack([_fit(image, height, width) for image in images[:frames]])


def _fit(image: Image.Image, height: int, width: int) -> np.ndarray:
    scale = max(height / image.height, width / image.width)
    h, w = max(height, round(image.height * scale)), max(width, round(image.width * scale))
    resized = image.resize((w, h), Image.Resampling.BICUBIC)
    top, left = (h - height) // 2, (w - width) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)), dtype=np.uint8)
