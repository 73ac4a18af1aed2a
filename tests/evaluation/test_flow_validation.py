"""The flow behind OFS, W, MAWE and the flow-magnitude std, checked on videos with known motion
(evaluation/flow_validation.py): the estimator in use recovers OFS within 10% and the median flow
within 0.5 px on every case, and `streamingt2v evaluate` reads a known pan's motion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation import flow_validation as fv
from evaluation.metrics import FlowConfig


def test_rendered_motion_is_exact():
    """A whole-pixel pan of a native 720 texture is the previous frame shifted; the true flow is the pan."""
    video, flow = fv.render(fv.Case("pan", 3.0, 720), frames=3)
    assert np.array_equal(video[1][:, 3:], video[0][:, :-3]) and np.array_equal(video[2][:, 3:], video[1][:, :-3])
    assert np.allclose(flow, [3.0, 0.0])
    _, rotation = fv.render(fv.Case("rotation", 12.0, 64))
    assert np.hypot(*rotation[0, 0]) == pytest.approx(12.0) and np.abs(rotation[359:361, 359:361]).max() < 0.02
    still, none = fv.render(fv.Case("static", 0.0, 128), frames=2)
    assert np.array_equal(still[0], still[1]) and not none.any()


def test_the_cases_cover_every_motion_speed_source_and_blur():
    cases = fv.validation_cases()
    assert {c.motion for c in cases} == {*fv.MOTIONS, "static"}
    assert {c.speed for c in cases if c.motion != "static"} == set(fv.SPEEDS)
    assert {c.source for c in cases} == set(fv.SOURCES)
    assert {(c.source, c.blur) for c in cases} >= {(720, "sharp"), (720, "blurred"), (256, "blurred")}


@pytest.mark.parametrize("case", [fv.Case("pan", 9.0, 160), fv.Case("rotation", 12.0, 64),
                                  fv.Case("zoom", 0.25, 256, "blurred"), fv.Case("diagonal", 1.0, 720)],
                         ids=lambda c: c.label)
def test_the_estimator_in_use_recovers_known_motion(case):
    result = fv.measure(case, FlowConfig().name)
    assert result.passed, result


def test_farneback_reads_almost_no_motion_where_the_estimator_in_use_reads_it():
    """The failure that made the validation: Farneback on an upscaled 9 px-per-frame pan."""
    case = fv.Case("pan", 9.0, 160)
    assert fv.measure(case, "farneback").measured_ofs < 0.5 * 81
    assert fv.measure(case, "dis-lk").measured_ofs == pytest.approx(81, rel=fv.OFS_TOLERANCE)


def test_flicker_scores_a_higher_mawe():
    smooth, flicker = fv.flicker_mawe(frames=4)
    assert flicker > 10 * smooth


@pytest.mark.integration  # 126 known-motion videos at 720x720: about a minute on 2 cores
def test_every_validation_case_passes_for_the_estimator_in_use():
    failed = [r for r in (fv.measure(case, FlowConfig().name) for case in fv.validation_cases()) if not r.passed]
    assert not failed, fv.markdown(failed)


def test_evaluate_reads_a_known_pan_from_an_encoded_file(tmp_path, capsys):
    """2 px per frame on a 160x160 video is 9 px per frame at the metrics' 720x720: OFS about 81."""
    from evaluation.cli import evaluate_main
    from infra.video_io import write_mp4

    video, _ = fv.render(fv.Case("pan", 9.0, 160), frames=6, upscale=False)
    path = str(tmp_path / "pan.mp4")
    write_mp4(video, path, 10)
    assert evaluate_main([path, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["flow_estimator"] == "dis-lk"
    assert result["metrics"]["ofs"] == pytest.approx(81, rel=fv.OFS_TOLERANCE)
