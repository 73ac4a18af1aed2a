"""Serve the project's Prefect deployments from one long-running process.

    prefect server start --host 127.0.0.1 --port 4200            # or any Prefect API
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
    prefect deployment run generate-batch/local -p prompts='["A camel resting on the snow field."]' --watch

Deployments:
* ``generate-batch/local``: local Ray cluster, ``tiny`` preset, output under ``outputs/batch``.
* ``generate-batch/gpu-cluster``: joins the running Ray cluster (``ray_address='auto'``), pools
  pinned as in ray_cluster.yaml (``pools='gpu'``), ``modelscope`` preset; its model locations are
  run parameters (``-p base_model=... -p streaming_model=... -p refiner=...``).
"""

from __future__ import annotations

from prefect import serve

from flows.generate_batch import generate_batch


def deployments() -> list:
    return [
        generate_batch.to_deployment(name="local", parameters={"output_uri": "outputs/batch", "preset": "tiny"},
                                     concurrency_limit=1),
        generate_batch.to_deployment(name="gpu-cluster", parameters={"ray_address": "auto", "pools": "gpu",
                                                                     "preset": "modelscope", "device": "cuda",
                                                                     "dtype": "float16"}),
    ]


if __name__ == "__main__":
    serve(*deployments())
