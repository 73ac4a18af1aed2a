"""The streamingt2v CLI: bad input exits 2 with one line and writes nothing; a SIGKILLed run
resumes from its last finished chunk and ends with the same video as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    (["a camel", "--guidance-text", "nan"], "guidance.text=nan"),
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
    while len(list(crashed.glob(".work/*/extend/*.safetensors"))) < 2:
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in crashed.glob(".work/*/extend/*.safetensors"))
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
def test_condition_replacement_reaches_the_request_and_its_id(tmp_path):
    from models.request import GenerationRequest

    assert main(["generate", "A camel resting on the snow field.", "--num-frames", "24", "--no-refine",
                 "--out", str(tmp_path), "--steps", "2", "--condition-replacement"]) == 0
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, refine=False,
                                num_inference_steps=2, condition_replacement=True)
    written = {p.name.split(".")[0] for p in tmp_path.iterdir() if p.suffix == ".mp4"}
    assert written == {request.video_id}
