"""Shared fixtures: tiny models built from the preset configs (no download), seeded."""

from __future__ import annotations

import os
import time

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


LIVE_FIXTURES = ("s3_server", "ray_local", "prefect_harness")
"""Fixtures that start live services: a test that uses one (directly or through another fixture)
must be marked ``integration``, so that ``pytest -m "not integration"`` stays a fast unit subset."""


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if item.get_closest_marker("integration") is None
                and any(name in LIVE_FIXTURES for name in getattr(item, "fixturenames", ()))]
    if unmarked:
        raise pytest.UsageError("tests that start live services need @pytest.mark.integration:\n"
                                + "\n".join(unmarked))


@pytest.fixture(scope="session")
def tiny_streaming():
    from models.streaming_t2v import StreamingT2V

    return StreamingT2V.from_preset("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_video_ldm():
    from models.video_ldm import VideoLDM

    return VideoLDM.from_preset("tiny", seed=0)


@pytest.fixture()
def seeded():
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_stages():
    from stages.generate import Stages
    from stages.sources import ModelSources

    return Stages.load(ModelSources(preset="tiny"))



class S3Faults:
    """Fault injection for the local S3 server: while a rule holds, PUTs of keys ending with its
    suffix are answered 503 (S3's SlowDown), as an overloaded or failing store would."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, float]] = []
        self.refused = 0

    def fail_puts(self, suffix: str, seconds: float) -> None:
        self.rules.append((suffix, time.monotonic() + seconds))

    def clear(self) -> None:
        self.rules.clear()

    def _failing(self, environ) -> bool:
        now = time.monotonic()
        path = environ.get("PATH_INFO", "")
        return environ.get("REQUEST_METHOD") == "PUT" and any(path.endswith(s) and now < t for s, t in self.rules)

    def wrap(self, app):
        def faulty(environ, start_response):
            if self._failing(environ):
                self.refused += 1
                body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                        b"<Message>injected fault</Message></Error>")
                start_response("503 Slow Down", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(body)))])
                return [body]
            return app(environ, start_response)

        return faulty


S3_FAULTS = S3Faults()


@pytest.fixture()
def s3_faults(s3_server):
    """The local S3 server's fault switch (cleared after the test)."""
    yield S3_FAULTS
    S3_FAULTS.clear()


class ManualClock:
    """A clock (seconds) that moves only when a test sets ``now``: leases and expiries without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1; yields its endpoint URL.

    The endpoint and dummy credentials go into the environment, so Ray workers started afterwards
    inherit them. ``AWS_ENDPOINT_URL`` is honoured by botocore, hence s3fs and infra.storage;
    pyarrow's own ``S3FileSystem`` ignores it and needs ``endpoint_override=`` (or an fsspec
    filesystem passed as ``filesystem=``).
    """
    import logging

    import s3fs
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class FaultyMotoServer(ThreadedMotoServer):  # moto's threaded server, its app behind S3_FAULTS
        def _server_entry(self) -> None:
            app = S3_FAULTS.wrap(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = FaultyMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"])))
        s3fs.S3FileSystem.clear_instance_cache()  # no cached client may point elsewhere
        try:
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


@pytest.fixture()
def s3_bucket(s3_server):
    """A fresh, empty bucket on the local server; yields ``s3://<name>``."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem()
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    yield f"s3://{name}"
    fs.rm(name, recursive=True)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def storage_root(request, tmp_path):
    """An empty output root, once as a local directory and once as a fresh S3 bucket."""
    return str(tmp_path) if request.param == "local" else request.getfixturevalue("s3_bucket")


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (a real local Prefect API) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A real local Ray cluster, once per test session. It starts after the S3 server so that
    its workers inherit the endpoint and credentials."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def alive_actors():
    """The class names of the connected Ray cluster's live actors, one per actor, from the GCS
    actor table (Ray's state without the dashboard, which the local test cluster does not run)."""
    def classes() -> list[str]:
        import ray._private.state

        return [a["ActorClassName"] for a in ray._private.state.actors().values() if a["State"] == "ALIVE"]

    return classes


@pytest.fixture(autouse=True, scope="module")
def _engine_stopped_after_module():
    """The engine is a detached actor: stopped after each test module that started one, so its
    pools never hold the local cluster's CPUs for the next module."""
    yield
    import ray

    if ray.is_initialized():
        from stages.engine import stop_engine

        stop_engine()


# Tiny models saved to disk: loading code paths and the starting points of training stages.
@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    from models.video_ldm import VideoLDM

    path = tmp_path_factory.mktemp("base")
    VideoLDM.from_preset("tiny", seed=0).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_cam_dir(tmp_path_factory):
    from models.streaming_t2v import StreamingT2V

    path = tmp_path_factory.mktemp("cam")
    StreamingT2V.from_preset("tiny", seed=0).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_conc_cond_dir(tmp_path_factory, tiny_base_dir):
    """The random Conc-Cond baseline (App. D.1) that ``train --stage conc_cond`` starts from."""
    from training.run import TrainConfig, build_model

    path = tmp_path_factory.mktemp("conc_cond")
    build_model(TrainConfig(stage="conc_cond", steps=1, init=tiny_base_dir)).save_pretrained(path)
    return str(path)
