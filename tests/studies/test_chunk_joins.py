"""The per-video cut and join figures, on a real manifest whose one finished video jumps at its
autoregressive chunk joins (a rendered toy clip with frames skipped there)."""

from __future__ import annotations

from studies.chunk_joins import main, run_joins
from infra import storage
from infra.manifest import BatchManifest
from infra.video_io import write_mp4
from models.request import GenerationRequest
from toyworld.scenes import Scene, render


def test_a_runs_videos_report_their_cuts_and_join_ratio(storage_root, tmp_path, capsys):
    scene = Scene("square", "blue", "right", "striped", speed=0.2)
    frames = render(scene, 80, 10.0, 64)
    # 48 shown frames; at each join (16, 24, 32, 40) the motion skips 4 frames ahead.
    shown, t = [], 0
    for i in range(48):
        t += 5 if i in (16, 24, 32, 40) else (1 if i else 0)
        shown.append(t)
    write_mp4(frames[shown], str(tmp_path / "v.mp4"), fps=10)
    video_uri = f"{storage_root}/run/v.mp4"
    storage.write_file(video_uri, tmp_path / "v.mp4")
    requests = [GenerationRequest(scene.caption, num_frames=48), GenerationRequest(scene.caption, num_frames=48, seed=1)]
    manifest = BatchManifest.create("b", requests)
    done, pending = list(manifest.rows)
    manifest.update(done, status="done", low_res_uri=video_uri)
    manifest.write(f"{storage_root}/run/manifest.parquet")

    rows = run_joins(storage_root)  # the pending video has no output: skipped
    assert [(r.prompt, r.num_frames, r.cuts) for r in rows] == [(scene.caption, 48, [])]
    assert rows[0].join_ratio > 2

    assert main([storage_root, f"{storage_root}/empty"]) == 0
    out = capsys.readouterr().out
    assert f"cuts=[]  join/median={rows[0].join_ratio:.2f}" in out and "no finished videos" in out
