"""``python -m training.export_checkpoint``: a checkpoint exports as the model the run would have
exported at that step (bit for bit at the last step), from a local path or s3://; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from flows.cli import main as cli_main
from infra import storage
from training.export_checkpoint import main


def _weights(model_dir: Path) -> dict[str, dict]:
    return {str(p.relative_to(model_dir)): load_file(p) for p in sorted(model_dir.rglob("*.safetensors"))}


def _same(a: dict[str, dict], b: dict[str, dict]) -> bool:
    return a.keys() == b.keys() and all(
        a[f].keys() == b[f].keys() and all(a[f][k].equal(b[f][k]) for k in a[f]) for f in a)


@pytest.mark.integration
def test_checkpoints_export_as_the_run_at_their_step(tmp_path, tiny_base_dir, s3_bucket, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "model"
    assert cli_main(["train", "--engine", "local", "--stage", "cam", "--init", tiny_base_dir, "--steps", "2",
                     "--batch-size", "1", "--fps", "10", "--lr", "1e-2", "--checkpoint-every", "1",
                     "--run-dir", str(run_dir), "--out", str(out)]) == 0
    first, last = run_dir / "checkpoints" / "step-00000001", run_dir / "checkpoints" / "step-00000002"

    assert main([str(last), "--out", str(tmp_path / "at2")]) == 0
    assert _same(_weights(tmp_path / "at2"), _weights(out))  # the run's own export, bit for bit
    assert main([str(first), "--out", str(tmp_path / "at1")]) == 0
    record = json.loads((tmp_path / "at1" / "training.json").read_text())
    assert record["step"] == 1 and record["stage"] == "cam" and len(record["history"]) == 1
    assert not _same(_weights(tmp_path / "at1"), _weights(out))  # step 2 trained on
    assert "(step 1)" in capsys.readouterr().out

    # From an object store, as Ray Train stores checkpoints under an s3:// run directory.
    remote = storage.join(s3_bucket, "run", "train", "checkpoint_000001")
    for f in sorted(last.iterdir()):
        storage.write_file(storage.join(remote, f.name), f)
    assert main([remote, "--out", str(tmp_path / "from_s3")]) == 0
    assert _same(_weights(tmp_path / "from_s3"), _weights(out))


def test_an_incomplete_checkpoint_exits_2_naming_it(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "trainable.safetensors").write_bytes(b"")
    assert main([str(tmp_path / "ckpt"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint=" in err and "optimizer.pt" in err and not (tmp_path / "m").exists()
