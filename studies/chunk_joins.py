"""Where a run's long videos cut, and how visible their chunk joins are: the per-video figures
behind the means of the toy-world ablation table (:mod:`studies.toyworld_ablations`), for the runs
of the nightly benchmark or of ``generate-batch``::

    python -m studies.chunk_joins outputs/toyworld-ablations/cam outputs/toyworld-ablations/conc-cond

For each directory (local or s3://) it reads every batch manifest below it and, for each video
whose low-resolution output exists, prints the frames at which SCuts' detector cuts
(:func:`evaluation.metrics.scene_cut_frames`) and the join-change ratio at the autoregressive
chunk joins (:func:`evaluation.metrics.join_change_ratio`, beyond the paper). Cuts of
autoregressive generation fall on joins; a ratio near 1 means the joins are invisible.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from evaluation.metrics import join_change_ratio, scene_cut_frames
from flows.generate_batch import MANIFEST_NAME
from infra import storage
from infra.manifest import BatchManifest
from infra.video_io import read_video
from models.chunk_plan import ChunkPlan


@dataclass(frozen=True)
class VideoJoins:
    prompt: str
    num_frames: int
    cuts: list[int]  # frames where a new scene starts
    join_ratio: float  # mean change across a chunk join / median change between frames

    def line(self) -> str:
        return f"{self.prompt[:48]:48s}  cuts={self.cuts}  join/median={self.join_ratio:.2f}"


def manifests_under(root: str) -> list[str]:
    """The batch manifests at or below ``root``, sorted (fsspec URIs keep their protocol)."""
    fs, path = storage.filesystem(root)
    found = sorted(fs.glob(f"{path.rstrip('/')}/**/{MANIFEST_NAME}"))
    return [fs.unstrip_protocol(p) for p in found] if "://" in root else found


def video_joins(uri: str, prompt: str) -> VideoJoins:
    """One low-resolution video's cuts and join ratio, its joins from the extend chunk plan."""
    frames = read_video(uri)
    joins = ChunkPlan.for_extend(len(frames)).joins
    return VideoJoins(prompt, len(frames), scene_cut_frames(frames), join_change_ratio(frames, joins))


def run_joins(root: str) -> list[VideoJoins]:
    """Every finished video's figures under ``root``, in manifest order."""
    out = []
    for manifest_uri in manifests_under(root):
        manifest = BatchManifest.read(manifest_uri)
        for row in manifest.rows.values():
            uri = row.get("low_res_uri")
            if uri and storage.exists(uri):
                out.append(video_joins(uri, row["prompt"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.chunk_joins", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run or output directories (local or s3://)")
    args = parser.parse_args(argv)
    for root in args.runs:
        print(root)
        rows = run_joins(root)
        if not rows:
            print("  no finished videos")
        for row in rows:
            print("  " + row.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
