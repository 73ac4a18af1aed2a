"""The output lease: one run writes an output location at a time; a crashed run's lease is taken
over once it expires, by exactly one of the runs that try. Local and on S3 (moto's server)."""

from __future__ import annotations

import json

import pytest

from infra import storage
from infra.output_lease import LEASE_NAME, LeaseLost, OutputBusy, OutputLease


def test_a_held_location_refuses_a_second_run_naming_the_holder_then_frees(storage_root):
    out = storage.join(storage_root, "batch")
    first = OutputLease(out, ttl_s=60, holder="run-a")
    first.acquire()
    second = OutputLease(out, ttl_s=60, holder="run-b")
    with pytest.raises(OutputBusy, match=r"output_uri=.*run-a holds its lease until") as info:
        second.acquire()
    assert info.value.field == "output_uri"
    first.renew()  # the holder renews freely
    first.release()
    second.acquire()  # released: the next run takes it at once
    assert json.loads(storage.read_bytes(storage.join(out, LEASE_NAME)))["holder"] == "run-b"
    second.release()


def test_an_expired_lease_is_taken_over_and_its_old_holder_told(storage_root, clock):
    out = storage.join(storage_root, "batch")
    crashed = OutputLease(out, ttl_s=10, holder="crashed", clock=clock)
    crashed.acquire()
    rerun = OutputLease(out, ttl_s=10, holder="rerun", clock=clock)
    clock.now += 5
    assert rerun.try_acquire()["holder"] == "crashed"  # not yet expired
    clock.now += 6
    assert rerun.try_acquire() is None  # expired: taken over
    with pytest.raises(LeaseLost):
        crashed.renew()  # had it only been paused, it learns it must stop


def test_of_two_takeovers_of_one_version_exactly_one_wins(storage_root):
    uri = storage.join(storage_root, "batch", LEASE_NAME)
    assert storage.create_if_absent(uri, b"v0") and not storage.create_if_absent(uri, b"other")
    data, version = storage.read_versioned(uri)
    assert data == b"v0"
    assert storage.replace_if(uri, b"a", version) is True
    assert storage.replace_if(uri, b"b", version) is False  # read the same version: loses
    assert storage.read_versioned(uri)[0] == b"a"
    assert storage.read_versioned(storage.join(storage_root, "missing")) is None


def test_the_context_manager_renews_while_the_run_lives(tmp_path):
    import time

    out = str(tmp_path / "batch")
    with OutputLease(out, ttl_s=0.3, holder="long-run"):
        time.sleep(0.6)  # two lease lives: renewed in the background meanwhile
        assert OutputLease(out, ttl_s=0.3, holder="other").try_acquire()["holder"] == "long-run"
    assert OutputLease(out, ttl_s=0.3, holder="other").try_acquire() is None
