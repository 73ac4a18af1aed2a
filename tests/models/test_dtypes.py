"""A half-precision CPU run is flagged where the CPU has no native arithmetic for it."""

from __future__ import annotations

import pytest
import torch

from models import dtypes


@pytest.fixture
def x86(monkeypatch):
    monkeypatch.setattr(dtypes.platform, "machine", lambda: "x86_64")

    def features(**present):
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"):
            monkeypatch.setattr(torch.cpu, name, lambda name=name: present.get(name, False), raising=False)
    return features


def test_half_precision_is_slow_on_an_x86_cpu_without_its_arithmetic(x86):
    x86()  # AVX2 only
    assert dtypes.slow_on_this_cpu("bfloat16") and dtypes.slow_on_this_cpu("float16")
    assert not dtypes.slow_on_this_cpu("float32")


def test_native_half_precision_is_not_flagged(x86):
    x86(_is_avx512_bf16_supported=True)
    assert not dtypes.slow_on_this_cpu("bfloat16") and dtypes.slow_on_this_cpu("float16")
    x86(_is_amx_tile_supported=True, _is_amx_fp16_supported=True)
    assert not dtypes.slow_on_this_cpu("bfloat16") and not dtypes.slow_on_this_cpu("float16")


def test_other_architectures_are_not_guessed(monkeypatch):
    monkeypatch.setattr(dtypes.platform, "machine", lambda: "aarch64")
    assert not dtypes.slow_on_this_cpu("bfloat16")
