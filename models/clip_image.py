"""The CLIP model whose image tower embeds APM's anchor frame (paper Sec. 4.2), and the one
preprocessing both sampling and CLIP training use.

Real presets load a released CLIP (ModelScope's is OpenCLIP ViT-H-14, whose text tower is also
the Video-LDM's text encoder). The toy world has no released CLIP, so ``streamingt2v train
--stage clip`` trains one contrastively on toy frames and their captions (Radford et al. 2021);
its image tower is what a StreamingT2V model built with ``--image-encoder`` embeds anchors with.
A tower with random weights (what a preset without weights gets) barely tells frames apart, so
APM then has no anchor to preserve (docs/toyworld.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer, CLIPVisionModelWithProjection

from models.presets import ModelPreset, get_preset
from models.tokenizer import tiny_clip_tokenizer

# CLIP's image normalisation (OpenAI / OpenCLIP ViT-H).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixel_values(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """Frames (b, 3, H, W) in [-1, 1] -> CLIP's input (b, 3, s, s): resized to the tower's input
    size (bicubic, antialiased) and CLIP-normalised, in float32."""
    x = (frames.float() + 1) / 2
    x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=True, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class CLIPPair:
    """A CLIP model (text and image towers with their projections) and its tokenizer, saved and
    loaded as one directory in transformers' format. ``CLIPVisionModelWithProjection.
    from_pretrained`` reads the image tower straight from such a directory, as it does from a
    released CLIP."""

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def from_preset(cls, preset: str | ModelPreset, seed: int = 0, device: str | torch.device = "cpu") -> "CLIPPair":
        """Random weights with the preset's tower sizes (the text tower is the preset's text
        encoder, the image tower its image encoder); the tokenizer must build offline."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        text = dict(preset.text_encoder)
        vision = dict(preset.image_encoder)
        projection = vision["projection_dim"]
        text["projection_dim"] = projection
        torch.manual_seed(seed)
        with torch.device(device):
            model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection))
        if not preset.offline_tokenizer:
            raise ValueError(f"preset {preset.name!r} has no offline tokenizer: load its released CLIP instead")
        return cls(model, tiny_clip_tokenizer())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "CLIPPair":
        model = CLIPModel.from_pretrained(path, torch_dtype=torch.float32).to(device)
        return cls(model, CLIPTokenizer.from_pretrained(path))

    def save_pretrained(self, path: str | Path) -> None:
        """The model, and a ``CLIPProcessor`` (this tokenizer, an image processor to the tower's
        input size with CLIP's normalisation), so that ``AutoProcessor`` loads the directory as it
        loads a released CLIP (e.g. for the CLIP-score metric)."""
        # imported here: without torchvision, transformers warns about its fallback at import
        from transformers import CLIPImageProcessor

        self.model.save_pretrained(path)
        s = self.image_size
        images = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                    image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
        CLIPProcessor(image_processor=images, tokenizer=self.tokenizer).save_pretrained(path)

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(captions, padding="max_length", truncation=True,
                              max_length=self.model.config.text_config.max_position_embeddings,
                              return_tensors="pt").input_ids.to(self.model.device)

    def image_embeds(self, frames: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings (b, e) of frames (b, 3, H, W) in [-1, 1]: what
        ``CLIPVisionModelWithProjection`` loaded from this directory returns as ``image_embeds``."""
        pixels = clip_pixel_values(frames, self.image_size).to(self.model.device)
        return self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)

    def contrastive_loss(self, frames: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """CLIP's symmetric InfoNCE loss over a batch of frames (b, 3, H, W) in [-1, 1] and their
        captions, with the learnt temperature."""
        pixels = clip_pixel_values(frames, self.image_size).to(self.model.device)
        return self.model(input_ids=self.tokenize(captions), pixel_values=pixels, return_loss=True).loss


def load_image_encoder(path: str | Path, device: str | torch.device = "cpu",
                       torch_dtype: torch.dtype = torch.float32) -> CLIPVisionModelWithProjection:
    """The image tower (with its projection) of a CLIP directory or hub id, or of a StreamingT2V
    model directory's ``image_encoder/``."""
    if (Path(path) / "image_encoder" / "config.json").exists():
        path = Path(path) / "image_encoder"
    encoder = CLIPVisionModelWithProjection.from_pretrained(str(path), torch_dtype=torch_dtype)
    return encoder.to(device).eval()
