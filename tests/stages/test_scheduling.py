"""The engine's scheduling policy, without Ray: priority for interactive requests within a bounded
share, back-pressure between stages, and the stage order."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from stages.scheduling import Scheduler, next_stage


def test_a_video_goes_init_extend_refine_and_skips_refine_when_it_does_not_ask_for_it():
    assert [next_stage("init", True), next_stage("extend", True), next_stage("refine", True)] == \
        ["extend", "refine", None]
    assert next_stage("extend", False) is None
    policy = Scheduler()
    policy.add("a", "init", "batch", refine=False)
    assert policy.start("init") == "a" and policy.start("init") is None
    assert policy.finish("a", "init") == "extend"
    assert policy.start("extend") == "a"
    assert policy.finish("a", "extend") is None and policy.held("refine") == 0


def test_interactive_requests_go_first_but_a_waiting_batch_gets_its_share():
    policy = Scheduler(interactive_share=0.75, window=8)
    for i in range(40):
        policy.add(f"b{i}", "init", "batch", refine=True)
        policy.add(f"i{i}", "init", "interactive", refine=True)
    starts = []
    for _ in range(40):
        key = policy.start("init")
        starts.append(key[0])
        policy.finish(key, "init", ok=False)  # the next stage's bound plays no part here
    assert starts[0] == "i"
    assert starts.count("b") == 10  # a quarter of the starts while both waited
    for k in range(0, 40, 8):  # and never starved for long: every 8 starts hold two batch ones
        assert starts[k:k + 8].count("b") == 2
    # alone, either class takes every start
    solo = Scheduler()
    for i in range(4):
        solo.add(f"i{i}", "init", "interactive", refine=True)
    assert [solo.start("init") for _ in range(4)] == ["i0", "i1", "i2", "i3"]


def test_a_next_stage_with_enough_waiting_holds_videos_back():
    policy = Scheduler(max_in_flight=2)
    for name in "abcd":
        policy.add(name, "init", "batch", refine=False)
    for _ in range(2):
        policy.finish(policy.start("init"), "init")  # a and b wait for extend
    assert policy.waiting("extend") == 2 and policy.start("init") is None  # the bound: 2 waiting
    assert policy.start("extend") == "a"  # a runs: one waits, so init may go on
    assert policy.start("init") == "c"
    policy.finish("c", "init")
    assert policy.start("init") is None and policy.held("extend") == 3  # b and c wait, a runs


def test_a_queued_video_can_be_withdrawn_and_a_share_out_of_range_is_refused():
    policy = Scheduler()
    policy.add("a", "extend", "interactive", refine=True)
    assert policy.withdraw("a") and not policy.withdraw("a") and policy.start("extend") is None
    with pytest.raises(ConfigError, match="interactive_share"):
        Scheduler(interactive_share=0.0)
    with pytest.raises(ConfigError, match="priority"):
        policy.add("b", "init", "urgent", refine=True)
