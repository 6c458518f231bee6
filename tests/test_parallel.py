"""Sequence-parallel (Ulysses degree 2) RECORD and ACTIVE passes on two CPU processes (gloo), docs/multi_gpu.md §4.

Two spawned processes (tests/sp_worker.py) form a real torch.distributed gloo group and each load the same
tiny real WanModel (4 heads: 2 per rank). Every case runs in both at once; each rank compares its
sequence-parallel result with the single-process adapter computed in the same process (1e-5), and
counts the query rows block 0 saw (its share only). The workers live for the module; every wait has
a timeout, so a hang fails the test instead of blocking.
"""
from __future__ import annotations

import queue
import socket

import pytest
import sp_worker
import torch.multiprocessing as mp

# Starting the two worker processes (spawn, host import, model build) takes most of a minute: not for the fast loop.
pytestmark = pytest.mark.slow

WORLD, TIMEOUT = 2, 120   # seconds a case may take on a shared 2-core machine (each takes a few)
ROWS, KEY_ROWS = sp_worker.FRAMES * 9, 9   # 3 x 3 rows a frame


@pytest.fixture(scope="module")
def ranks():
    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inboxes, outbox = [ctx.Queue() for _ in range(WORLD)], ctx.Queue()
    procs = [ctx.Process(target=sp_worker.serve, args=(r, WORLD, port, inboxes[r], outbox), daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:   # both ranks joined the group and loaded the model (spawn + host import: most of this module's time)
        assert sorted(outbox.get(timeout=TIMEOUT) for _ in range(WORLD)) == [(r, "ready") for r in range(WORLD)]
    except queue.Empty:
        pytest.fail(f"the two ranks did not start in {TIMEOUT} s")

    def run(case: str, **kwargs) -> list[dict]:
        for box in inboxes:
            box.put((case, kwargs))
        results = {}
        try:
            while len(results) < WORLD:
                rank, result = outbox.get(timeout=TIMEOUT)
                results[rank] = result
        except queue.Empty:
            pytest.fail(f"{case}: no answer from ranks {sorted(set(range(WORLD)) - set(results))} in {TIMEOUT} s (a hang)")
        return [results[r] for r in range(WORLD)]

    yield run
    for box in inboxes:
        box.put(None)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()


def exact(results: list[dict]) -> None:
    for r in results:
        assert "error" not in r, r.get("trace")
        assert r["record"] <= 1e-5 and r["active"] <= 1e-5, r
        assert r["zeros"], "non-keyframe outputs of an active pass are zeros"


@pytest.mark.parametrize("keyframes", [(0, 2, 4), (0, 1), (3,)], ids=["3-uneven", "2-in-one-shard", "1"])
def test_record_and_active_passes_equal_the_single_process_adapter(ranks, keyframes):
    results = ranks("passes", keyframes=keyframes)
    exact(results)
    # Rows measured inside the model: each rank's share of the queries (batched cond/uncond), padded to equal shares.
    share, key_share = -(-ROWS // WORLD), -(-len(keyframes) * KEY_ROWS // WORLD)
    assert [r["rows"] for r in results] == [[sp_worker.BATCH * share, sp_worker.BATCH * key_share]] * WORLD


@pytest.mark.parametrize("variant", ["i2v", "ti2v_5b"])
def test_image_to_video_inputs_and_per_frame_timesteps(ranks, variant):
    """I2V: concat mask + image channels and CLIP-vision tokens; TI2V-5B: one timestep per frame (frame 0 clean)."""
    exact(ranks("passes", variant=variant))


def test_keyframe_only_context(ranks):
    exact(ranks("passes", context="keyframe_only"))


def test_a_sampling_run_under_degree_2_equals_the_single_process_run(ranks):
    results = ranks("sampling")
    for r in results:
        assert "error" not in r, r.get("trace")
        assert r["err"] <= 1e-5 and r["completed"] == [True, True], r
        assert r["calls"][0] == r["calls"][1] and r["calls"][0]["active"] > 0, r["calls"]
        assert r["keyframes"][0] == r["keyframes"][1]
        # Inside the model: warm-up passes are the stock forward (every row), rhythmic points and active passes
        # this rank's share (cond and uncond batched).
        batch, key_share = 2, -(-len(r["keyframes"][0]) * KEY_ROWS // WORLD)
        assert set(r["rows"]) == {batch * ROWS, batch * -(-ROWS // WORLD), batch * key_share}
        assert r["rows"].count(batch * key_share) == r["calls"][0]["active"]


@pytest.mark.parametrize("how", ["raise", "interrupt"])
def test_a_rank_that_fails_stops_both(ranks, how):
    results = ranks("failing", failing_rank=1, how=how)
    if how == "raise":
        assert results[1]["error"] == "RhymeFlowInputError" and "refused on rank 1" in results[1]["message"]
        assert results[0]["error"] == "RuntimeError" and "rank 1" in results[0]["message"]
        assert "refused on rank 1" in results[0]["message"]
    else:
        assert [r["error"] for r in results] == ["InterruptProcessingException"] * WORLD
    exact(ranks("passes"))   # the group is still usable: nobody was left inside a collective


@pytest.mark.parametrize("what,says", [("ring", "ring attention"), ("pipefusion", "PipeFusion"),
                                       ("heads", "does not divide"), ("hidden_cache", "hidden_cache")])
def test_refusals(ranks, what, says):
    results = ranks("refused", what=what)
    assert [r.get("error") for r in results] == ["RhymeFlowInputError"] * WORLD, results
    assert all(says in r["message"] for r in results), results
