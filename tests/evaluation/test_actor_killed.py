"""An engine actor SIGKILLed from outside (the kernel's OOM killer, an operator's kill -9) takes its engine
core with it: a real `upft evaluate` on the tiny model; once a chunk is running, its actor is SIGKILLed with
no chance to clean up. Its vLLM engine core (a child process holding the model and KV cache) must be gone
within seconds, not left as an orphan holding memory while Ray Data restarts the actor beside it; and the
evaluation still ends with every question graded once. Two things end the core here: Ray (each worker leads
its own process group, which the raylet kills when the worker dies, and the core is in it; the failure
message says whether it still is) and the actor's watcher (``upft_ray/engine/reaper.py``). Then the same with
the raylet killed too (``ray stop --force``), where only the watcher is left to end it."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import psutil
import pytest
from conftest import REPO
from drills import (
    attempts,
    engine_core,
    engine_socket_dirs,
    lost_and_duplicated,
    record_fault,
    socket_dirs_left,
    summaries,
    survivors,
    wait_for_running_attempt,
)
from test_eval_faults import QUESTIONS, evaluate, finish

pytestmark = pytest.mark.slow  # one evaluation on a local Ray, two engine starts


def heldout_ids() -> list[str]:
    """Return the ids of the questions the drill evaluates: the first QUESTIONS of arith-heldout."""
    lines = (REPO / "upft_ray" / "data" / "arith_heldout.jsonl").read_text().splitlines()[:QUESTIONS]
    return [json.loads(line)["id"] for line in lines]


def test_a_killed_engine_actor_leaves_no_engine_core_behind(tmp_path, tiny_model_dir):
    run, log = tmp_path / "run", tmp_path / "eval.log"
    eval_dir = run / "eval_base"
    driver = evaluate(run, tiny_model_dir, log)
    try:
        victim = wait_for_running_attempt(eval_dir, driver, log)
        core = engine_core(victim["pid"])
        assert len(engine_socket_dirs(victim["pid"])) == 1  # vLLM's socket files, in the actor's own directory
        same_group = os.getpgid(core.pid) == os.getpgid(victim["pid"])
        os.kill(victim["pid"], signal.SIGKILL)  # the actor alone; its engine core gets no signal from us
        killed_at = time.time()
        left = survivors([core.pid], timeout_s=30)
        gone_after_s = time.time() - killed_at
        assert not left, (f"engine core {core.pid} outlived its SIGKILLed actor by 30 s (in the actor's process "
                          f"group: {same_group})")
        assert not socket_dirs_left(victim["pid"])  # removed by the actor's watcher
        finish(driver, log)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    lost, duplicated = lost_and_duplicated(pd.read_parquet(eval_dir / "arith-heldout.parquet")["question_id"],
                                           heldout_ids())
    assert (lost, duplicated) == (0, 0)
    # the killed actor's attempt is on record as died (by the actor Ray Data restarted), and redone
    died = [a for a in attempts(eval_dir) if a["id"] == victim["id"]]
    assert [a["status"] for a in died] == ["died"], died
    resumed = min(s["finished"] for s in summaries(eval_dir).values() if s["finished"] > killed_at) - killed_at
    record_fault("engine actor SIGKILLed alone (as by the OOM killer)", "evaluate", died[0]["ended"] - killed_at,
                 resumed, lost, duplicated, engine_core_gone_after_s=round(gone_after_s, 1))


def test_an_engine_actor_killed_with_its_raylet_leaves_no_engine_core_behind(tmp_path, tiny_model_dir):
    """What `ray stop --force` does to a node: the raylet and the actor SIGKILLed at once, so no Ray process is
    left to end the actor's process group; the actor's watcher (``upft_ray/engine/reaper.py``) ends the engine
    core. The same command again then finishes the evaluation, every question graded once."""
    run, log = tmp_path / "run", tmp_path / "eval.log"
    driver = evaluate(run, tiny_model_dir, log)
    try:
        victim = wait_for_running_attempt(run / "eval_base", driver, log)
        core = engine_core(victim["pid"])
        raylet = psutil.Process(victim["pid"]).parent()
        assert raylet.name() == "raylet", raylet
        for pid in (raylet.pid, victim["pid"]):
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        left = survivors([core.pid], timeout_s=30)
        assert not left, f"engine core {core.pid} outlived its actor and raylet by 30 s"
        assert not socket_dirs_left(victim["pid"])  # removed by the actor's watcher
        gone_after_s = time.time() - killed_at
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the rest of the local cluster, as `ray stop --force` ends it
        driver.wait(timeout=60)
    time.sleep(2)
    rerun_log, rerun_at = tmp_path / "rerun.log", time.time()
    finish(evaluate(run, tiny_model_dir, rerun_log), rerun_log)
    lost, duplicated = lost_and_duplicated(pd.read_parquet(run / "eval_base" / "arith-heldout.parquet")["question_id"],
                                           heldout_ids())
    assert (lost, duplicated) == (0, 0)
    killed = [a["status"] for a in attempts(run / "eval_base") if a["id"] == victim["id"]]
    assert killed == ["interrupted"], killed  # the rerun found it running, no actor of its own to restart
    resumed = min(s["finished"] for s in summaries(run / "eval_base").values() if s["finished"] > rerun_at) - rerun_at
    # detected: the watcher saw its actor gone and ended the engine core
    record_fault("engine actor and its raylet SIGKILLed (as by ray stop --force), same command rerun", "evaluate",
                 gone_after_s, resumed, lost, duplicated, engine_core_gone_after_s=round(gone_after_s, 1))
