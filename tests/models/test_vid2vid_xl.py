"""MS-Vid2Vid-XL as our refiner: float32 parity of the converted UNet, VAE, text encoder, tokenizer,
schedule and guidance rescale with ModelScope's own modules at small sizes, strictness of the
conversion, and a converted folder refining a tiny video.

ModelScope's modules are imported file by file (:func:`_reference`): modelscope 1.40.2's package
``__init__`` files import its model registry and dependencies this project does not install
(addict; transformers names that transformers 5 no longer has), and open_clip's import
torchvision, which has no build for this torch here. Two stand-ins are put in ``sys.modules``
while those files import, and removed afterwards:

* ``xformers.ops.memory_efficient_attention``, which ``unet_v2v``'s attention calls (xformers'
  CPU kernels do not load with this torch): the stand-in computes what xformers documents,
  softmax(q k^T / sqrt(d)) v, with no bias and no dropout (it refuses any other call);
* ``torchvision.ops.misc.FrozenBatchNorm2d`` and ``torchvision.transforms``, which open_clip's
  utilities and ModelScope's embedder import but the text tower never calls.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import ConfigError
from models.guidance import text_cfg
from models.refinement import ChunkRefiner, RefineConfig, refine_sequential
from models.schedule import VID2VID_XL_SCHEDULE
from models.tokenizer import tiny_clip_tokenizer
from models.vid2vid_unet import Vid2VidUNet, latent_size_fits
from models.vid2vid_xl import (BPE_FILE, REFINE_FILE, clip_tokenizer_from_bpe, convert_vid2vid_xl, list_dropped,
                               load_vid2vid_xl)
from models.vid2vid_xl_keys import convert_text_encoder, convert_unet, convert_vae

MS = "modelscope.models.multi_modal.video_to_video"
ATOL = 1e-5  # float32 parity, of the output's scale


def _assert_parity(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, atol=ATOL * max(1.0, expected.abs().max().item()), rtol=0)


# -- ModelScope's own code ----------------------------------------------------------------------------
def _memory_efficient_attention(q, k, v, attn_bias=None, op=None):
    assert attn_bias is None and op is None, "the stand-in covers unet_v2v's call only"
    weights = torch.einsum("bid,bjd->bij", q, k) * q.shape[-1] ** -0.5
    return torch.einsum("bij,bjd->bid", weights.softmax(dim=-1), v)


def _stand_ins() -> dict[str, types.ModuleType]:
    xops = types.ModuleType("xformers.ops")
    xops.memory_efficient_attention = _memory_efficient_attention
    xformers = types.ModuleType("xformers")
    xformers.ops = xops
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
    ops = types.ModuleType("torchvision.ops")
    ops.misc = misc
    transforms = types.ModuleType("torchvision.transforms")
    torchvision = types.ModuleType("torchvision")
    torchvision.ops, torchvision.transforms = ops, transforms
    return {"xformers": xformers, "xformers.ops": xops, "torchvision": torchvision, "torchvision.ops": ops,
            "torchvision.ops.misc": misc, "torchvision.transforms": transforms}


def _import_file_by_file(name: str):
    """Import ``name`` with empty stand-ins for its parent packages (their __init__ is not run)."""
    parts = name.split(".")
    root = sys.modules.get(parts[0])
    path = list(root.__path__ if root is not None else importlib.util.find_spec(parts[0]).submodule_search_locations)
    for i in range(1, len(parts)):
        package = ".".join(parts[:i])
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = path
            sys.modules[package] = stub
        path = [f"{p}/{parts[i]}" for p in path]
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def ref():
    """ModelScope's video_to_video modules (and open_clip's text tower, where installed)."""
    for package in ("modelscope", "fairscale", "rotary_embedding_torch", "torchsde"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} not installed (test extra)")
    with _reference() as modules:
        yield modules


@contextlib.contextmanager
def _reference():
    before = set(sys.modules)
    sys.modules.update(_stand_ins())
    try:
        modules = types.SimpleNamespace(
            unet=_import_file_by_file(f"{MS}.modules.unet_v2v"),
            autoencoder=_import_file_by_file(f"{MS}.modules.autoencoder"),
            diffusion=_import_file_by_file(f"{MS}.utils.diffusion_sdedit"),
            schedules=_import_file_by_file(f"{MS}.utils.schedules_sdedit"),
            openclip=None, tokenizer=None, embedder=None)
        if importlib.util.find_spec("open_clip") is not None:
            modules.openclip = _import_file_by_file("open_clip.transformer")
            modules.tokenizer = _import_file_by_file("open_clip.tokenizer")
            modules.embedder = _import_file_by_file(f"{MS}.modules.embedder")
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("xformers", "torchvision", "modelscope", "open_clip"):
                del sys.modules[name]
    yield modules


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random (ModelScope zero-initialises output layers, which would hide a wrong
    map), norm scales around 1 (so that no layer's signal fades)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            for name, p in layer.named_parameters(recurse=False):
                scale = isinstance(layer, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and name == "weight"
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if scale else 0.0))
    return module.eval()


def _vid2vid_sdunet(ref, **kw):
    return _randomize(ref.unet.Vid2VidSDUNet(**{**dict(dim=32, dim_mult=[1, 2], head_dim=8, num_res_blocks=1,
                                                       context_dim=1024, attn_scales=[1, 1 / 2], dropout=0.0,
                                                       use_checkpoint=False), **kw}))


def _ldm_autoencoder(ref, ch_mult=(1, 2)):
    ddconfig = dict(double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=list(ch_mult),
                    num_res_blocks=1, attn_resolutions=[], dropout=0.0)
    return _randomize(ref.autoencoder.AutoencoderKL(ddconfig, 4))


def _sd_checkpoint(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An SD 2.1-style checkpoint state dict: the VAE under first_stage_model., and other parts."""
    state = {"first_stage_model." + k: v for k, v in vae.state_dict().items()}
    state.update({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 3, 3),
                  "cond_stage_model.model.positional_embedding": torch.zeros(77, 8), "betas": torch.zeros(1000)})
    return state


def _openclip_text_state(width=1024, layers=2, vocab=514, mlp=64, seed=0) -> dict[str, torch.Tensor]:
    """A state dict with OpenCLIP's CLIP key structure (text tower, plus image-tower leftovers)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(shape, generator=g) * 0.1

    state = {"token_embedding.weight": r(vocab, width), "positional_embedding": r(77, width),
             "ln_final.weight": 1 + r(width), "ln_final.bias": r(width), "text_projection": r(width, width),
             "logit_scale": torch.tensor(4.6), "visual.conv1.weight": r(8, 3, 14, 14)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        state.update({p + "ln_1.weight": 1 + r(width), p + "ln_1.bias": r(width), p + "ln_2.weight": 1 + r(width),
                      p + "ln_2.bias": r(width), p + "attn.in_proj_weight": r(3 * width, width),
                      p + "attn.in_proj_bias": r(3 * width), p + "attn.out_proj.weight": r(width, width),
                      p + "attn.out_proj.bias": r(width), p + "mlp.c_fc.weight": r(mlp, width),
                      p + "mlp.c_fc.bias": r(mlp), p + "mlp.c_proj.weight": r(width, mlp),
                      p + "mlp.c_proj.bias": r(width)})
    return state


# -- parity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,size", [
    (dict(num_res_blocks=1, attn_scales=[1, 1 / 2]), (12, 10)),
    (dict(num_res_blocks=2, attn_scales=[1]), (8, 6)),
    (dict(dim_mult=[1, 2, 2], attn_scales=[1 / 2, 1 / 4]), (10, 12)),  # 10 -> 6 -> 4 rows: MS-Vid2Vid-XL's geometry
])
def test_unet_matches_vid2vid_sdunet(ref, kw, size):
    theirs = _vid2vid_sdunet(ref, **kw)
    ours = convert_unet(theirs.state_dict())
    assert isinstance(ours, Vid2VidUNet)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 4, 5, *size, generator=g), torch.randn(2, 7, 1024, generator=g)
    t = torch.tensor([599, 37])
    with torch.no_grad():
        expected, got = theirs(x, t, y), ours(x, t, y).sample
    assert got.shape == expected.shape
    _assert_parity(got, expected)


def test_the_released_sizes_convert_and_run_at_1280x720_on_meta(ref):
    """Vid2VidSDUNet() and ModelScope's autoencoder config as released (no weights: meta tensors)."""
    with torch.device("meta"):
        theirs = ref.unet.Vid2VidSDUNet()
        autoencoder = ref.autoencoder.AutoencoderKL(dict(double_z=True, z_channels=4, resolution=256, in_channels=3,
                                                         out_ch=3, ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2,
                                                         attn_resolutions=[], dropout=0.0), 4)
    unet = convert_unet(theirs.state_dict())
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in theirs.parameters()) == 1_411_233_860
    assert unet.config.block_out_channels == (320, 640, 1280, 1280) and unet.config.attention_head_dim == 64
    x, y = torch.empty(1, 4, 2, 90, 160, device="meta"), torch.empty(1, 77, 1024, device="meta")
    with torch.no_grad():
        assert unet(x, torch.tensor([599], device="meta"), y).sample.shape == x.shape
    vae = convert_vae({"first_stage_model." + k: v for k, v in autoencoder.state_dict().items()})
    assert vae.config.block_out_channels == (128, 256, 512, 512) and vae.config.latent_channels == 4


def test_vae_matches_modelscope_autoencoder(ref):
    theirs = _ldm_autoencoder(ref)
    ours = convert_vae(_sd_checkpoint(theirs))
    g = torch.Generator().manual_seed(2)
    x, z = torch.rand(2, 3, 24, 40, generator=g) * 2 - 1, torch.randn(2, 4, 12, 20, generator=g)
    with torch.no_grad():
        _assert_parity(ours.encode(x).latent_dist.mean, theirs.encode(x).mean)
        _assert_parity(ours.decode(z).sample, theirs.decode(z))


def test_schedule_and_noising_match_modelscope(ref):
    """alpha_bar to 1e-6 at every t; x_t to 1e-5 where refinement noises (t = 20..600): near t = 0
    and t = T the scheduler's float32 alpha_bar holds too few digits of 1 - alpha_bar (alpha_bar)."""
    sigmas = ref.schedules.noise_schedule(schedule="logsnr_cosine_interp", n=1000, zero_terminal_snr=True,
                                          scale_min=2.0, scale_max=4.0)
    scheduler = VID2VID_XL_SCHEDULE.make_scheduler()
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), 1 - sigmas.double() ** 2, atol=1e-6, rtol=0)
    assert scheduler.alphas_cumprod[-1] == 0 and sigmas[-1] == 1  # zero terminal SNR
    diffusion = ref.diffusion.GaussianDiffusion_SDEdit(sigmas=sigmas, prediction_type="v")
    g = torch.Generator().manual_seed(3)
    z0, eps = torch.randn(1, 4, 6, 8, 8, generator=g), torch.randn(1, 4, 6, 8, 8, generator=g)
    for t in (20, 100, 299, 599, 600):
        theirs = diffusion.diffuse(z0, torch.tensor([t]), eps)
        torch.testing.assert_close(scheduler.add_noise(z0, eps, torch.tensor([t])), theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rescale", [0.0, 0.2])
def test_v_prediction_and_guidance_rescale_match_modelscope_denoise(ref, rescale):
    """Their x0 from the guided (and rescaled) v equals the x0 our DDIM step computes from
    text_cfg's output, on the same x_t."""
    sigmas = ref.schedules.noise_schedule(schedule="logsnr_cosine_interp", n=1000, zero_terminal_snr=True,
                                          scale_min=2.0, scale_max=4.0)
    diffusion = ref.diffusion.GaussianDiffusion_SDEdit(sigmas=sigmas, prediction_type="v")
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(2, 4, 6, 8, 8, generator=g)
    v = {"text": torch.randn(2, 4, 6, 8, 8, generator=g), "null": torch.randn(2, 4, 6, 8, 8, generator=g) * 0.5}
    t = 599
    x0_theirs = diffusion.denoise(xt, torch.tensor([t, t]), None, lambda x, t, y: v[y], [{"y": "text"}, {"y": "null"}],
                                  guide_scale=7.5, guide_rescale=rescale)[3]
    scheduler = VID2VID_XL_SCHEDULE.make_scheduler()
    scheduler.set_timesteps(50)
    guided = text_cfg(v["null"], v["text"], 7.5, rescale)
    x0_ours = scheduler.step(guided, t, xt, eta=0.0).pred_original_sample
    torch.testing.assert_close(x0_ours, x0_theirs, atol=ATOL, rtol=0)


def test_guidance_rescale_zero_is_plain_cfg():
    g = torch.Generator().manual_seed(5)
    null, text = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g)
    assert torch.equal(text_cfg(null, text, 7.5, 0.0), null + 7.5 * (text - null))
    assert torch.equal(text_cfg(null, text, 7.5), text_cfg(null, text, 7.5, 0.0))
    rescaled = text_cfg(null, text, 7.5, 1.0)  # phi = 1: the guided prediction takes the text branch's std
    torch.testing.assert_close(rescaled.flatten(1).std(dim=1), text.flatten(1).std(dim=1))


def test_text_encoder_and_tokenizer_match_openclip(ref):
    """ModelScope's FrozenOpenCLIPEmbedder (penultimate layer, then ln_final) on open_clip's text
    tower, against our CLIPTextModel and the CLIP tokenizer built from open_clip's BPE file."""
    if ref.openclip is None:
        pytest.skip("open_clip not installed: test_text_mapping_is_complete_and_strict covers the mapping")
    torch.manual_seed(6)
    tower = ref.openclip.TextTransformer(context_length=77, vocab_size=49408, width=128, heads=2, layers=3,
                                         output_dim=128)
    # ModelScope's embedder feeds the blocks (L, N, D), as open_clip did before its blocks became batch-first.
    tower.transformer = ref.openclip.Transformer(width=128, layers=3, heads=2, batch_first=False)
    _randomize(tower)
    embedder = ref.embedder.FrozenOpenCLIPEmbedder.__new__(ref.embedder.FrozenOpenCLIPEmbedder)
    torch.nn.Module.__init__(embedder)
    embedder.model, embedder.layer_idx, embedder.device = tower, 1, "cpu"
    state = {**tower.state_dict(), "logit_scale": torch.tensor(4.6), "visual.proj": torch.zeros(4, 4)}
    encoder = convert_text_encoder(state).eval()
    bpe = Path(ref.tokenizer.__file__).parent / BPE_FILE
    tokenizer = clip_tokenizer_from_bpe(bpe)
    prompts = ["Camera following a pack of crows flying in the sky.", "", "a cat, 4K!! (sharp) don't stop",
               "word " * 90]  # the last one is truncated to 77 tokens, ending in the end token
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    theirs_ids = ref.tokenizer.tokenize(prompts)
    assert torch.equal(ids, theirs_ids)
    with torch.no_grad():
        _assert_parity(encoder(ids)[0], embedder.encode_with_transformer(theirs_ids))


def test_text_mapping_is_complete_and_strict():
    state = _openclip_text_state(width=128, layers=3, vocab=514, mlp=256)
    encoder = convert_text_encoder(state)
    assert encoder.config.num_hidden_layers == 2 and encoder.config.num_attention_heads == 2
    q = encoder.encoder.layers[1].self_attn.q_proj.weight
    assert torch.equal(q, state["transformer.resblocks.1.attn.in_proj_weight"][:128])
    assert torch.equal(encoder.final_layer_norm.weight, state["ln_final.weight"])
    with pytest.raises(ConfigError, match="transformer.resblocks.0.ls_1.gamma"):
        convert_text_encoder({**state, "transformer.resblocks.0.ls_1.gamma": torch.ones(128)})
    bad = {**state, "transformer.resblocks.0.mlp.c_fc.weight": torch.zeros(256, 64, 2)}
    with pytest.raises(ConfigError, match="mlp.fc1.weight"):
        convert_text_encoder(bad)


# -- strictness --------------------------------------------------------------------------------------
def test_unet_conversion_refuses_unknown_keys_missing_keys_and_bad_reshapes(ref):
    state = _vid2vid_sdunet(ref).state_dict()
    with pytest.raises(ConfigError, match=r"fps_embedding\.0\.weight"):
        convert_unet({**state, "fps_embedding.0.weight": torch.zeros(128, 32)})
    with pytest.raises(ConfigError, match=r"input_blocks\.1\.3\.weight"):
        convert_unet({**state, "input_blocks.1.3.weight": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if k != "input_blocks.1.1.proj_out.weight"}
    with pytest.raises(ConfigError, match=r"down_blocks\.0\.attentions\.0\.proj_out\.weight"):
        convert_unet(missing)
    key = "input_blocks.1.2.proj_in.weight"  # Conv1d (32, 32, 1): only (32, 32) may stand for it
    with pytest.raises(ConfigError, match=r"temp_attentions\.0\.proj_in\.weight"):
        convert_unet({**state, key: state[key].reshape(32, 1, 32)})


def test_vae_conversion_refuses_unknown_keys(ref):
    state = _sd_checkpoint(_ldm_autoencoder(ref))
    with pytest.raises(ConfigError, match=r"first_stage_model\.encoder\.down\.0\.attn\.0\.q\.weight"):
        convert_vae({**state, "first_stage_model.encoder.down.0.attn.0.q.weight": torch.zeros(32, 32, 1, 1)})
    with pytest.raises(ConfigError, match="lora_te_text_model"):
        convert_vae({**state, "lora_te_text_model.weight": torch.zeros(1)})


def test_vid2vid_latent_geometry():
    assert latent_size_fits(90, 160, 3)  # 720x1280: 90 -> 46 -> 24 -> 13 rows
    assert not latent_size_fits(32, 32, 3)  # 32 -> 17 -> 10: odd at the second level
    assert not latent_size_fits(90, 161, 1)


# -- a ModelScope folder as a refiner ------------------------------------------------------------------
def _modelscope_folder(ref, folder: Path) -> Path:
    folder.mkdir()
    unet = _vid2vid_sdunet(ref, attn_scales=[1 / 2])
    torch.save({"state_dict": unet.state_dict()}, folder / "non_ema.pth")
    torch.save({"state_dict": _sd_checkpoint(_ldm_autoencoder(ref, ch_mult=(1, 2, 2)))}, folder / "v2-1_512.ckpt")
    torch.save(_openclip_text_state(), folder / "open_clip_pytorch_model.bin")
    tiny_clip_tokenizer().save_pretrained(folder / "tokenizer")
    (folder / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "video-to-video",
        "model": {"type": "video-to-video-model", "model_args": {
            "ckpt_unet": "non_ema.pth", "ckpt_clip": "open_clip_pytorch_model.bin",
            "ckpt_autoencoder": "v2-1_512.ckpt", "solver_mode": "fast"}}}))
    return folder


def test_converted_folder_reloads_through_model_sources_and_refines(ref, tmp_path):
    from models.request import GenerationRequest
    from stages.refine import RefineStage
    from stages.sources import ModelSources

    folder = _modelscope_folder(ref, tmp_path / "ms")
    out = convert_vid2vid_xl(folder, tmp_path / "refiner")
    assert json.loads((out / REFINE_FILE).read_text()) == {"guidance_rescale": 0.2}
    geometry = dict(target_height=32, target_width=32, canvas_height=32, canvas_width=48, chunk_frames=12, overlap=4)
    request = GenerationRequest("A red ball rolls.", num_frames=16, seed=1, refine_steps=10, refine_guidance=7.5)
    low_res = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    results = []
    for location in (out, folder):  # the converted directory, and the ModelScope folder converted in memory
        sources = ModelSources(refiner=str(location))
        model = sources.load_refiner()
        assert isinstance(model.unet, Vid2VidUNet) and model.schedule == VID2VID_XL_SCHEDULE
        assert model.tokenizer.pad_token_id == 0
        config = sources.refine_config(**geometry)
        assert config.guidance_rescale == 0.2
        results.append(RefineStage(model, config)(request, low_res))
    assert results[0].shape == (16, 32, 32, 3)
    assert results[0].tobytes() == results[1].tobytes()


def test_guidance_rescale_refines_with_the_refiner_model(ref, tmp_path):
    """The refine loop with MS-Vid2Vid-XL's sampling (v-prediction, schedule, rescale 0.2)."""
    model = load_vid2vid_xl(_modelscope_folder(ref, tmp_path / "ms"))
    config = RefineConfig(target_height=32, target_width=32, canvas_height=32, canvas_width=32, chunk_frames=12,
                          overlap=4, num_inference_steps=10, guidance_rescale=0.2)
    clean = model.encode(torch.rand(1, 3, 16, 32, 32) * 2 - 1)
    text = model.encode_prompt(["", "A red ball rolls."])
    refiner = ChunkRefiner(16, tuple(clean.shape[i] for i in (1, 3, 4)), model.schedule, config, seed=0)

    def noise(x, t, index):
        null, cond = model.unet(torch.cat([x, x]), t, text).sample.chunk(2)
        return text_cfg(null, cond, config.guidance, config.guidance_rescale)

    latents = refine_sequential(refiner, clean, noise)
    assert latents.shape == clean.shape and torch.isfinite(latents).all()
    assert len(refiner.timesteps) == 6  # T' = 600 in steps of 100


def test_list_dropped_names_every_dropped_key(ref, tmp_path):
    report = list_dropped(_modelscope_folder(ref, tmp_path / "ms"))
    assert not report.unrecognised
    assert "v2-1_512.ckpt:betas" in report.dropped
    assert "open_clip_pytorch_model.bin:transformer.resblocks.1.mlp.c_fc.weight" in report.dropped  # last block
    assert "open_clip_pytorch_model.bin:visual.conv1.weight" in report.dropped
    assert report.lines()[-1].startswith(f"# {len(report.mapped)} mapped")


def test_a_folder_without_its_files_or_task_is_refused(tmp_path):
    (tmp_path / "configuration.json").write_text(json.dumps({"task": "video-to-video", "model": {"model_args": {}}}))
    with pytest.raises(ConfigError, match="ckpt_unet"):
        load_vid2vid_xl(tmp_path)
    (tmp_path / "configuration.json").write_text(json.dumps({"task": "text-to-video-synthesis"}))
    with pytest.raises(ConfigError, match="video-to-video"):
        load_vid2vid_xl(tmp_path)


def test_tokenizer_from_a_bpe_file_pads_with_id_0(tmp_path):
    bpe = tmp_path / BPE_FILE
    with gzip.open(bpe, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\nr e\nre d</w>\n")
    tokenizer = clip_tokenizer_from_bpe(bpe)
    assert len(tokenizer) == 256 * 2 + 2 + 2 and tokenizer.convert_ids_to_tokens(0) == "!"
    ids = tokenizer(["red"], padding="max_length", max_length=77).input_ids[0]
    assert ids[:3] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("red</w>"), tokenizer.eos_token_id]
    assert ids[3:] == [0] * 74


def test_the_cli_converts_lists_and_refuses_a_folder_of_another_model(ref, tmp_path, capsys):
    from flows.cli import main

    folder = _modelscope_folder(ref, tmp_path / "ms")
    assert main(["convert-vid2vid-xl", str(folder), "--list-dropped"]) == 0
    assert any(line.startswith("dropped\tv2-1_512.ckpt:betas\t") for line in capsys.readouterr().out.splitlines())
    assert main(["convert-vid2vid-xl", str(folder), "--out", str(tmp_path / "refiner")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "refiner")
    assert json.loads((tmp_path / "refiner" / REFINE_FILE).read_text()) == {"guidance_rescale": 0.2}
    assert main(["convert-vid2vid-xl", str(tmp_path)]) == 2
    assert "folder=" in capsys.readouterr().err
