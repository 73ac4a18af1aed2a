"""The streamingt2v CLI: bad input exits 2 with one line and writes nothing; a SIGKILLed run
resumes from its last finished chunk and ends with the same video as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from flows.cli import main
from infra.video_io import read_video

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "3", "--refine-steps", "5"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "generate", *args]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_out(tmp_path_factory):
    """An output folder holding one finished video: bad commands must leave it as it is."""
    out = tmp_path_factory.mktemp("out")
    assert main(["generate", "A camel resting on the snow field.", "--num-frames", "16", "--no-refine",
                 "--out", str(out), "--steps", "2"]) == 0
    return out


@pytest.mark.parametrize("args,field", [
    (["", "--num-frames", "16"], "prompt=''"),
    (["a camel", "--num-frames", "8"], "num_frames=8"),
    (["a camel", "--num-frames", "99999"], "num_frames=99999"),
    (["a camel", "--fps", "0"], "fps=0"),
    (["a camel", "--fps", "-5"], "fps=-5"),
    (["a camel", "--blend", "soft"], "blend='soft'"),
    (["a camel", "--preset", "huge"], "preset='huge'"),
    (["a camel", "--guidance-text", "nan"], "guidance_text=nan"),
    (["a camel", "--base-model", "/nonexistent/model"], "base_model='/nonexistent/model'"),
    (["a camel", "--preset", "modelscope"], "base_model=None"),
    (["x" * 300, "--num-frames", "16"], "prompt='302 tokens'"),
])
def test_bad_input_exits_2_with_one_line_and_keeps_outputs(finished_out, capsys, args, field):
    before = _snapshot(finished_out)
    assert main(["generate", *args, "--out", str(finished_out), "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamingt2v: error: ") and field in err[0], err
    assert "must be" in err[0]
    assert _snapshot(finished_out) == before


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["generate", "a camel", "--out", str(blocker / "sub")]) == 2
    assert "out=" in capsys.readouterr().err and blocker.read_text() == "not a directory"


@pytest.mark.integration
def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_video(tmp_path):
    args = ["A knight riding on a horse through the countryside.", "--num-frames", "48", "--seed", "11", *FAST]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    subprocess.run(_cli(*args, "--out", str(reference)), check=True, cwd=REPO, env=env, capture_output=True)

    proc = subprocess.Popen(_cli(*args, "--out", str(crashed)), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(crashed.glob(".work/*/extend/*.safetensors"))) < 3:  # so the chunk table has rows 0 and 1
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (table,) = crashed.glob("chunks/*.parquet")  # what a rerun trusts: the chunks the table records
    finished = pq.read_table(table).column("chunk").to_pylist()
    assert 2 <= len(finished) < 5 and not list(crashed.glob("*.mp4"))

    rerun = subprocess.run(_cli(*args, "--out", str(crashed)), check=True, cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert f"{len(finished)} chunk(s) already finished" in rerun.stderr
    ref_chunks = sorted(reference.glob(".work/*/extend/*.safetensors"))
    new_chunks = sorted(crashed.glob(".work/*/extend/*.safetensors"))
    assert [p.name for p in ref_chunks] == [p.name for p in new_chunks] and len(ref_chunks) == 5
    for a, b in zip(ref_chunks, new_chunks):
        assert load_file(a)["latents"].numpy().tobytes() == load_file(b)["latents"].numpy().tobytes()
    for pattern in ("*.lowres.mp4", "*[0-9a-f].mp4"):
        (ref_video,), (new_video,) = reference.glob(pattern), crashed.glob(pattern)
        assert (read_video(str(ref_video)) == read_video(str(new_video))).all()
        assert len(read_video(str(new_video))) == 48


@pytest.mark.integration  # a whole `streamingt2v generate` run
def test_condition_replacement_reaches_the_request_and_its_id(tmp_path, capsys):
    """The tiny preset turns condition replacement on; --no-condition-replacement turns it off,
    and the id and the record follow the value run."""
    import json

    from models.request import GenerationRequest

    assert main(["generate", "A camel resting on the snow field.", "--num-frames", "24", "--no-refine",
                 "--out", str(tmp_path), "--steps", "2", "--no-condition-replacement"]) == 0
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, refine=False,
                                num_inference_steps=2, condition_replacement=False)
    assert request.video_id != GenerationRequest("A camel resting on the snow field.", num_frames=24, refine=False,
                                                 num_inference_steps=2).video_id
    written = {p.name.split(".")[0] for p in tmp_path.iterdir() if p.suffix == ".mp4"}
    assert written == {request.video_id}
    record = json.loads((tmp_path / f"{request.video_id}.json").read_text())
    assert record["params"]["condition_replacement"] is False and record["params"]["refine_steps"] == 10
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("24 frames, 64x64, 10 fps in ") and "init-chunk" in lines[0] and "extend" in lines[0]
    assert lines[-1] == f"video:   {tmp_path / request.video_id}.mp4"

def test_preview_draws_the_low_res_video_above_the_refined_one(tmp_path, capsys):
    """`streamingt2v preview OUT/<id>.mp4` finds <id>.lowres.mp4 and writes a PNG strip with both."""
    import cv2
    import numpy as np

    from infra.video_io import write_mp4

    low = np.zeros((16, 32, 32, 3), np.uint8)
    low[:, :, :, 0] = 200  # red
    high = np.zeros((16, 64, 64, 3), np.uint8)
    high[:, :, :, 2] = 200  # blue
    write_mp4(low, str(tmp_path / "abc.lowres.mp4"), 10)
    write_mp4(high, str(tmp_path / "abc.mp4"), 10)
    assert main(["preview", str(tmp_path / "abc.mp4"), "--frames", "4"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "abc.preview.png")
    strip = cv2.imread(out)[:, :, ::-1]
    from evaluation.preview import GAP, HEADER, LABEL_WIDTH

    assert strip.shape == (HEADER + 2 * (64 + GAP), LABEL_WIDTH + 4 * (64 + GAP), 3)
    top, bottom = strip[HEADER + 32, LABEL_WIDTH + 32], strip[HEADER + 64 + GAP + 32, LABEL_WIDTH + 32]
    assert top[0] > 150 and top[2] < 60 and bottom[2] > 150 and bottom[0] < 60
    assert main(["preview", str(tmp_path / "missing.mp4")]) == 2
    assert "video=" in capsys.readouterr().err
