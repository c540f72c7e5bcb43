"""A real multi-node Ray cluster on this machine, and killing one of its nodes the way a preempted pod dies.

Every node is a raylet (plus its agents) started by ``ray.cluster_utils.Cluster`` from this test process;
a node's processes are its own ``all_processes`` and all their descendants (Ray workers, vLLM engine
cores, train workers). :func:`kill_node` SIGKILLs exactly those PIDs - never a process found by name,
never a Ray instance this test did not start."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from drills import running_units, survivors

# Fast failure detection: the GCS declares a silent raylet dead after period x threshold (defaults:
# 3 s x 5). A pod's loss is noticed as fast as these settings allow; the measurements say which were used.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                          "health_check_initial_delay_ms": 0}


@pytest.fixture
def private_ray_tmpdir(monkeypatch):
    """Keep the clusters' Ray files (sessions, sockets, the "current cluster" address file) in a private
    temporary directory, so no other Ray on the machine sees or is touched by them."""
    path = tempfile.mkdtemp(prefix="upft-mn-", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield path
    if not os.environ.get("UPFT_KEEP_RAY_TMPDIR"):  # set it to read a drill's Ray logs afterwards
        shutil.rmtree(path, ignore_errors=True)


def start_cluster(head_cpus: float, workers: list[dict]):
    """Start a head node with ``head_cpus`` CPUs and one worker node per dict of ``add_node`` args; return
    (cluster, [worker nodes])."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "include_dashboard": False, "_system_config": dict(FAST_FAILURE_DETECTION),  # Ray adds its own keys to it
        "object_store_memory": 300 * 1024 * 1024})
    nodes = [cluster.add_node(**{"object_store_memory": 200 * 1024 * 1024, **args}) for args in workers]
    cluster.wait_for_nodes()
    return cluster, nodes


def node_pids(node) -> set[int]:
    """Return the PIDs of ``node``'s own processes and of all their descendants, now."""
    pids = set()
    for infos in node.all_processes.values():
        for info in infos:
            try:
                proc = psutil.Process(info.process.pid)
                pids.add(proc.pid)
                pids.update(child.pid for child in proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    return pids


def kill_node(cluster, node, pids: set[int] | None = None) -> tuple[float, set[int]]:
    """SIGKILL every process of ``node`` at once (no graceful exit; ``pids`` if given, already frozen), then
    drop it from ``cluster``; return (time of the kill, PIDs killed). Raises AssertionError if one of them is
    still alive afterwards."""
    pids = node_pids(node) if pids is None else pids
    killed_at = time.time()
    _signal(pids, signal.SIGKILL)
    cluster.remove_node(node, allow_graceful=False)  # reaps them; already dead, so nothing graceful happens
    alive = survivors(pids)
    assert not alive, f"processes of the killed node survived: {alive}"
    return killed_at, pids


def kill_busy_engine_node(cluster, workers, stage_dir: Path, driver, min_done: int,
                          timeout_s: float = 400) -> tuple[str, float, set[str], set[int]]:
    """Once two engine nodes have committed ``min_done`` units between them, SIGKILL the one running the most
    uncommitted units; return (its node id, time it was stopped, the units it held, PIDs killed).

    The node is frozen (SIGSTOP) before its work is read, so the units it holds are exactly those it held
    at the kill: a unit cannot commit between the look and the kill (chunks take well under a second here,
    less than finding a node's processes). A node found idle, or between a commit and its attempt's end,
    is thawed and the wait goes on. Raises AssertionError if no engine node held work in ``timeout_s``."""
    by_id, deadline = {n.node_id: n for n in workers}, time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None:
        done, running = running_units(stage_dir)
        engine_nodes = {s["node_id"] for s in done.values()}
        if len(engine_nodes) == 2 and len(done) >= min_done:
            for node_id in sorted(engine_nodes & set(running), key=lambda n: -len(running[n])):
                pids = node_pids(by_id[node_id])
                _signal(pids, signal.SIGSTOP)
                stopped_at = time.time()  # nothing of the node's starts or ends after this
                time.sleep(0.2)  # a write under way when the signal came lands before the look
                done, running = running_units(stage_dir)
                held = {k for k in running.get(node_id, set()) if f"chunk-{k}" not in done}
                if held and held == running[node_id]:
                    kill_node(cluster, by_id[node_id], pids)
                    return node_id, stopped_at, held, pids
                _signal(pids, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no engine node held uncommitted work while both engines were committing")


def _signal(pids: set[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids`` that is still there; return nothing."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def shutdown(cluster) -> None:
    """Stop every node of ``cluster`` (gracefully), then SIGKILL any of their processes still alive."""
    nodes = list(cluster.worker_nodes) + ([cluster.head_node] if cluster.head_node is not None else [])
    pids = set().union(*(node_pids(n) for n in nodes)) if nodes else set()
    cluster.shutdown()
    _signal(survivors(pids, timeout_s=0), signal.SIGKILL)
