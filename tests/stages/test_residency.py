"""--low-memory: one model on the device at a time, and the same video as without it."""

from __future__ import annotations

from infra.run_store import RunStore
from infra.video_io import read_video
from models.request import GenerationRequest
from stages.residency import Residency


class _Model:
    def __init__(self, name, moves):
        self.name, self.moves = name, moves

    def to(self, device, dtype=None):
        self.moves.append((self.name, device))
        return self


def test_only_the_running_stages_model_is_on_the_device():
    moves = []
    init, extend, refine = (_Model(n, moves) for n in ("init", "extend", "refine"))
    residency = Residency("cuda:0", low_memory=True)
    for model in (init, extend, extend, refine, extend):
        residency.use(model)
    assert moves == [("init", "cuda:0"), ("init", "cpu"), ("extend", "cuda:0"), ("extend", "cpu"),
                     ("refine", "cuda:0"), ("refine", "cpu"), ("extend", "cuda:0")]
    assert residency.holding == "cpu"
    normal = Residency("cuda:0")
    normal.use(init)
    assert len(moves) == 7 and normal.holding == "cuda:0"  # normal mode moves nothing


def test_low_memory_makes_the_same_video_bit_for_bit(tmp_path):
    """A whole video, refined, with and without low memory: byte-identical MP4s (the low-res one
    and the final one), the refine stage streaming its encode and decode in the VAE's batches."""
    from stages.generate import Stages, generate_video
    from stages.sources import ModelSources

    params = dict(prompt="a red circle moving left on a striped background", num_frames=40, seed=2,
                  num_inference_steps=2, refine_steps=5)  # 40 frames: three VAE batches, two refine chunks
    videos = []
    for low_memory in (False, True):
        request = GenerationRequest(**params)
        out = tmp_path / f"low{low_memory}"
        stages = Stages.load(ModelSources(low_memory=low_memory))
        assert stages.refine.residency.low_memory is low_memory
        record = generate_video(request, stages, RunStore(str(out), request.video_id))
        videos.append([(out / f"{request.video_id}{ext}").read_bytes() for ext in (".lowres.mp4", ".mp4")])
        assert read_video(record["artifacts"]["video"]).shape == (40, 128, 128, 3)
    assert videos[0] == videos[1]
