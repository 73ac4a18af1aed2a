"""The conditioning probe on tiny random models: real measurements of every figure it reports,
and the paper's zero-initialisation seen through it (an untrained CAM or Conc-Cond input
ignores its condition, so own, other and no conditioning frames give the same prediction)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.errors import ConfigError
from models.streaming_t2v import StreamingT2V
from studies.conditioning_probe import CONDITIONS, ProbeConfig, main, probe, probe_clips, teacher_forced

CONFIG = ProbeConfig(num_clips=2, timesteps=(500, 950), cfg_weights=(1.0, 7.5), steps=2)


@pytest.mark.integration  # the whole probe
@pytest.mark.parametrize("fixture", ["tiny_cam_dir", "tiny_conc_cond_dir"])
def test_untrained_condition_paths_are_ignored_and_every_figure_is_measured(request, fixture):
    model = StreamingT2V.from_pretrained(request.getfixturevalue(fixture))
    result = probe(model, CONFIG)
    rows = result["teacher_forced"]
    assert [(r["t"], r["condition"], r["w"]) for r in rows] == [
        (t, c, w) for t in CONFIG.timesteps for c in CONDITIONS for w in (CONFIG.cfg_weights if c == "own" else (1.0,))]
    for t in CONFIG.timesteps:
        at_t = {(r["condition"], r["w"]): r for r in rows if r["t"] == t}
        own = at_t[("own", 1.0)]
        assert own["recovered"] > 0 and own["new"] > 0
        # zero-initialised P_out (CAM, Eq. 5) / new input channels (Conc-Cond): the condition is unused
        assert at_t[("other", 1.0)]["recovered"] == pytest.approx(own["recovered"], rel=1e-5)
        assert at_t[("zero", 1.0)]["new"] == pytest.approx(own["new"], rel=1e-5)
        # the guidance direction (eps_text - eps_null) is measured once per t, on the "own" rows
        own_rows = [r for r in rows if r["t"] == t and r["condition"] == "own"]
        assert len({(r["direction_recovered"], r["direction_new"]) for r in own_rows}) == 1
        assert own["direction_recovered"] > 0 and own["direction_new"] > 0
        assert not any("direction_recovered" in r for r in rows if r["condition"] != "own")
    chunks = result["one_chunk"]
    assert len(chunks) == CONFIG.num_clips
    assert all(r["recover_error"] > 0 and r["join"] > 0 and r["inner"] > 0 for r in chunks)


def test_bad_settings_are_refused_naming_the_field(capsys):
    with pytest.raises(ConfigError) as err:
        ProbeConfig(num_clips=0)
    assert err.value.field == "num_clips"
    with pytest.raises(ConfigError) as err:
        ProbeConfig(timesteps=(1000,))
    assert err.value.field == "timesteps"
    assert main(["some-model", "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err
    assert main(["some-model", "--target", "pixels"]) == 2
    assert "target" in capsys.readouterr().err


def test_the_source_target_is_the_latents_the_condition_was_decoded_from(tiny_cam_dir):
    """target 'source' scores the prediction against the latents the clips were decoded from (a
    chunk join in sampling), 'reencoded' against the decoded clips' own latents: one VAE round
    trip apart, so the same prediction scores differently."""
    model = StreamingT2V.from_pretrained(tiny_cam_dir)
    config = ProbeConfig(num_clips=2, timesteps=(500,), cfg_weights=(1.0,), steps=1)
    clips, source, scenes = probe_clips(model, config)
    assert torch.equal(model.decode(source).float().cpu(), clips)
    captions = [s.caption for s in scenes]
    reencoded = teacher_forced(model, clips, captions, config, source)
    sourced = teacher_forced(model, clips, captions, replace(config, target="source"), source)
    assert [r["recovered"] for r in reencoded] != [r["recovered"] for r in sourced]
    with pytest.raises(ConfigError) as err:
        teacher_forced(model, clips, captions, replace(config, target="source"))
    assert err.value.field == "source"
