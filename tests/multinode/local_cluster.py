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

import psutil
import pytest
from drills import survivors

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


def kill_node(cluster, node) -> tuple[float, set[int]]:
    """SIGKILL every process of ``node`` at once (no graceful exit), then drop it from ``cluster``; return
    (time of the kill, PIDs killed). Raises AssertionError if one of them is still alive afterwards."""
    pids = node_pids(node)
    killed_at = time.time()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.remove_node(node, allow_graceful=False)  # reaps them; already dead, so nothing graceful happens
    alive = survivors(pids)
    assert not alive, f"processes of the killed node survived: {alive}"
    return killed_at, pids



def shutdown(cluster) -> None:
    """Stop every node of ``cluster`` (gracefully), then SIGKILL any of their processes still alive."""
    nodes = list(cluster.worker_nodes) + ([cluster.head_node] if cluster.head_node is not None else [])
    pids = set().union(*(node_pids(n) for n in nodes)) if nodes else set()
    cluster.shutdown()
    for pid in survivors(pids, timeout_s=0):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
