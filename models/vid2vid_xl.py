"""Load the released MS-Vid2Vid-XL (ModelScope ``damo/Video-to-Video``, the paper's refiner) as a
:class:`~models.video_ldm.VideoLDM`: :class:`~models.vid2vid_unet.Vid2VidUNet`, diffusers
``AutoencoderKL``, transformers ``CLIPTextModel`` and a CLIP tokenizer, sampled with
:data:`~models.schedule.VID2VID_XL_SCHEDULE` (v-prediction, ``logsnr_cosine_interp``) and
guidance rescale 0.2 (:data:`REFINE_DEFAULTS`).

The folder holds ``configuration.json`` (task ``video-to-video``; ``model.model_args`` names the
files ``ckpt_unet``, ``ckpt_clip`` and ``ckpt_autoencoder``) and those three files.

The mapping of their keys is :mod:`models.vid2vid_xl_keys`.

Tokenizer: OpenCLIP's is CLIP's byte-level BPE (49408 tokens) with start/end tokens and padding
with id 0 to 77 tokens; ours is a transformers ``CLIPTokenizer`` of the same vocabulary and
merges with pad id 0, from the folder's ``tokenizer/`` (e.g. stable-diffusion-2-1's), its
``bpe_simple_vocab_16e6.txt.gz``, or the one installed open_clip ships (:func:`load_tokenizer`).
It normalises text by NFC, whitespace folding and lower-casing; OpenCLIP also runs ftfy and HTML
unescaping, so only prompts with mojibake or HTML entities tokenize differently.

Not taken over from ModelScope's pipeline: it appends a fixed "positive prompt" to every caption
and uses a fixed negative prompt; ours encodes the request's prompt and negative prompt. It
encodes a sample of the VAE posterior; ours encodes its mean.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from models.convert_official import load_lightning_state_dict
from models.errors import ConfigError
from models.key_mapping import KeyReport
from models.presets import VideoConfig
from models.schedule import VID2VID_XL_SCHEDULE
from models.tokenizer import CLIP_CONTEXT, _byte_level_alphabet
from models.vid2vid_xl_keys import CONVERTERS
from models.video_ldm import VideoLDM

TASK = "video-to-video"
FILES = {"unet": "ckpt_unet", "text_encoder": "ckpt_clip", "vae": "ckpt_autoencoder"}
REFINE_DEFAULTS = {"guidance_rescale": 0.2}
"""RefineConfig fields MS-Vid2Vid-XL is sampled with (its pipeline: guide_rescale=0.2)."""
REFINE_FILE = "refine.json"
"""A refiner directory's RefineConfig defaults (written by :func:`convert_vid2vid_xl`)."""
VIDEO = VideoConfig(height=720, width=1280, frames_per_chunk=24)
"""The canvas MS-Vid2Vid-XL was trained at (1280x720) and the paper's refine chunk."""
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


# -- the folder -----------------------------------------------------------------------------------
def is_vid2vid_xl_folder(path: str | Path) -> bool:
    """Whether ``path`` is a ModelScope model folder of the video-to-video task."""
    file = Path(path) / "configuration.json"
    if not file.is_file():
        return False
    try:
        return json.loads(file.read_text()).get("task") == TASK
    except (ValueError, AttributeError):
        return False


def weight_files(folder: str | Path) -> dict[str, Path]:
    """component -> file, from ``configuration.json``'s ``model.model_args``."""
    folder = Path(folder)
    require_folder(folder)
    args = json.loads((folder / "configuration.json").read_text()).get("model", {}).get("model_args", {})
    files = {}
    for part, name in FILES.items():
        if not isinstance(args.get(name), str) or not (folder / args[name]).is_file():
            raise ConfigError(f"configuration.json model.model_args.{name}", args.get(name),
                              f"the name of a file in {folder}")
        files[part] = folder / args[name]
    return files


def require_folder(folder: Path) -> None:
    if not is_vid2vid_xl_folder(folder):
        raise ConfigError("refiner", str(folder), f"a ModelScope folder whose configuration.json has task {TASK!r}")


# -- tokenizer ------------------------------------------------------------------------------------
def clip_tokenizer_from_bpe(path: str | Path) -> CLIPTokenizer:
    """The CLIP tokenizer of an OpenCLIP BPE file (``bpe_simple_vocab_16e6.txt.gz``), built as
    OpenCLIP's SimpleTokenizer builds its vocabulary: the 256 byte symbols in GPT-2 order, the
    same with ``</w>``, one token per merge (at most 49152 - 256 - 2), then start and end of
    text; padding with id 0 as OpenCLIP does."""
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines if line]
    symbols = sorted(_byte_level_alphabet(), key=ord)  # bytes_to_unicode's insertion order
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    return with_openclip_padding(CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges,
                                               model_max_length=CLIP_CONTEXT))


def with_openclip_padding(tokenizer: CLIPTokenizer) -> CLIPTokenizer:
    """OpenCLIP pads with id 0 (``!`` in CLIP's vocabulary); the text encoder's outputs at padded
    positions, which cross-attention reads, depend on it."""
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
    return tokenizer


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """The folder's ``tokenizer/`` (transformers files), else its BPE file, else the BPE file of
    an installed open_clip (the tokenizer ModelScope's pipeline uses)."""
    folder = Path(folder)
    if (folder / "tokenizer").is_dir():
        return with_openclip_padding(CLIPTokenizer.from_pretrained(folder / "tokenizer"))
    if (folder / BPE_FILE).is_file():
        return clip_tokenizer_from_bpe(folder / BPE_FILE)
    spec = importlib.util.find_spec("open_clip")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / BPE_FILE).is_file():
            return clip_tokenizer_from_bpe(Path(location) / BPE_FILE)
    raise ConfigError("refiner tokenizer", str(folder), f"a tokenizer/ folder (CLIP BPE, e.g. stable-diffusion-2-1's) "
                      f"or {BPE_FILE} in the MS-Vid2Vid-XL folder, or open_clip installed")


# -- the whole refiner ----------------------------------------------------------------------------
def list_dropped(folder: str | Path, trust_pickle: bool = False) -> KeyReport:
    """Every key of the folder's three files, named ``<file>:<key>``: mapped, dropped (why) or
    unrecognised; no model is built."""
    report = KeyReport()
    for part, file in weight_files(folder).items():
        one = CONVERTERS[part][0](load_lightning_state_dict(file, trust_pickle))
        report.mapped.update({f"{file.name}:{k}": v for k, v in one.mapped.items()})
        report.dropped.update({f"{file.name}:{k}": v for k, v in one.dropped.items()})
        report.unrecognised += [f"{file.name}:{k}" for k in one.unrecognised]
    return report


def load_vid2vid_xl(folder: str | Path, torch_dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    trust_pickle: bool = False) -> VideoLDM:
    """MS-Vid2Vid-XL from its ModelScope folder, converted in memory (strict: see the module)."""
    parts = {}
    for part, file in weight_files(folder).items():
        parts[part] = CONVERTERS[part][1](load_lightning_state_dict(file, trust_pickle), str(file))
    model = VideoLDM(parts["unet"], parts["vae"], parts["text_encoder"], load_tokenizer(folder), VIDEO,
                     VID2VID_XL_SCHEDULE)
    return model.to(device, torch_dtype)


def convert_vid2vid_xl(folder: str | Path, out: str | Path, trust_pickle: bool = False) -> Path:
    """Write MS-Vid2Vid-XL as a refiner directory (``VideoLDM.save_pretrained``: unet/, vae/,
    text_encoder/, tokenizer/, scheduler/, geometry and schedule, and :data:`REFINE_FILE`), which
    ``ModelSources(refiner=out)`` loads without converting again."""
    out = Path(out)
    load_vid2vid_xl(folder, trust_pickle=trust_pickle).save_pretrained(out)
    (out / REFINE_FILE).write_text(json.dumps(REFINE_DEFAULTS, indent=2))
    return out


def refine_defaults(location: str | Path) -> dict:
    """The RefineConfig fields a refiner prescribes: MS-Vid2Vid-XL's for its ModelScope folder,
    a converted directory's :data:`REFINE_FILE`, else none."""
    path = Path(location)
    if is_vid2vid_xl_folder(path):
        return dict(REFINE_DEFAULTS)
    if (path / REFINE_FILE).is_file():
        return json.loads((path / REFINE_FILE).read_text())
    return {}


