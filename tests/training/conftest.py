"""The starting points of the training stages (tiny_base_dir, tiny_cam_dir: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def init_dirs(tiny_base_dir, tiny_cam_dir):
    return {"vae": None, "base": tiny_base_dir, "cam": tiny_base_dir, "conc_cond": tiny_base_dir,
            "refiner": tiny_base_dir, "clip": None,
            "cam_apm": tiny_cam_dir}
