"""Every request parameter reaches every boundary from its one definition (models/request.py):
the CLI's generate flags, the generate-batch and nightly-benchmark flows, the Serve body and the manifest."""

from __future__ import annotations

import pytest

from flows.cli import _parser
from flows.generate_batch import generate_batch
from flows.nightly_benchmark import nightly_benchmark
from flows.serve_api import VideoBody
from infra.manifest import REQUEST_COLUMNS
from infra.params import flag
from models.params import leaves
from models.request import NOT_PARAMETERS, PARAM_DEFAULTS, GenerationRequest

PARAMETERS = [leaf for leaf in leaves(GenerationRequest) if leaf.name not in NOT_PARAMETERS]


def _generate_parser():
    return _parser()._subparsers._group_actions[0].choices["generate"]


def test_the_cli_has_a_flag_per_parameter_with_its_default():
    actions = {a.dest: a for a in _generate_parser()._actions}
    for leaf in PARAMETERS:
        action = actions[leaf.name]
        if leaf.name != "prompt":
            assert flag(leaf) in action.option_strings
            assert action.default == leaf.default, leaf.name


@pytest.mark.parametrize("flow,excluded", [(generate_batch, {"prompt", "prompt_schedule"}),
                                            (nightly_benchmark, {"prompt", "prompt_schedule"})])
def test_the_flows_take_every_parameter(flow, excluded):
    properties = flow.parameters.properties
    for leaf in PARAMETERS:
        if leaf.name not in excluded:
            assert leaf.name in properties, leaf.name
    assert properties["guidance_text"]["default"] == PARAM_DEFAULTS["guidance_text"]
    assert nightly_benchmark.parameters.properties["num_frames"]["default"] == 240  # the paper's test length


def test_the_flows_refuse_out_of_range_parameters_before_a_run():
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="num_frames"):
        generate_batch.validate_parameters({"prompts": ["a"], "num_frames": 8})
    with pytest.raises(ParameterTypeError, match="guidance_anchor"):
        nightly_benchmark.validate_parameters({"guidance_anchor": -1.0})


def test_the_serve_body_and_the_manifest_have_every_parameter():
    assert set(VideoBody.model_fields) == {leaf.name for leaf in PARAMETERS}
    assert set(REQUEST_COLUMNS) == {leaf.name for leaf in PARAMETERS}
