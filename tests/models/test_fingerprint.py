"""Model fingerprints: the same files give the same id, any change of a weight file gives another."""

from __future__ import annotations

from models.fingerprint import fingerprint, weights_digest


def test_a_directory_digest_follows_its_files_and_ignores_hidden_ones(tmp_path):
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "weights.safetensors").write_bytes(b"\x00" * 1000)
    (model / "config.json").write_text("{}")
    first = weights_digest(str(model))
    (model / ".cache").mkdir()
    (model / ".cache" / "lock").write_text("x")
    assert weights_digest(str(model)) == first  # hidden files are not the model
    (model / "unet" / "weights.safetensors").write_bytes(b"\x00" * 999 + b"\x01")
    assert weights_digest(str(model)) != first  # one changed byte
    copy = tmp_path / "copy"
    (copy / "unet").mkdir(parents=True)
    (copy / "unet" / "weights.safetensors").write_bytes(b"\x00" * 999 + b"\x01")
    (copy / "config.json").write_text("{}")
    assert weights_digest(str(copy)) == weights_digest(str(model))  # content, not location


def test_a_hub_id_is_named_by_its_id_and_the_fingerprint_by_all_parts():
    assert weights_digest("someone/some-model").startswith("hub:someone/some-model@")
    a = fingerprint({"preset": "tiny", "base_model": "x"})
    assert a == fingerprint({"base_model": "x", "preset": "tiny"}) and len(a) == 16
    assert a != fingerprint({"preset": "tiny", "base_model": "y"})
