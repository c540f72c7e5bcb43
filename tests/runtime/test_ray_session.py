"""What a failed run leaves in the driver's Ray: its placement groups are removed before the next run
(a Ray Train run whose worker was killed out of memory kept its workers' CPUs reserved for good)."""

from __future__ import annotations

import time

from upft_ray.runtime.ray_session import release_placement_groups


def test_a_left_behind_placement_group_is_removed_and_its_cpus_come_back(ray_local):
    import ray
    from ray.util.placement_group import placement_group

    before = ray.available_resources().get("CPU", 0.0)
    group = placement_group([{"CPU": 1.0}])
    ray.get(group.ready(), timeout=60)
    assert ray.available_resources().get("CPU", 0.0) <= before - 1.0
    assert release_placement_groups() == 1
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0.0) < before and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0.0) == before
    assert ray.util.placement_group_table(group)["state"] == "REMOVED"
    assert release_placement_groups() == 0  # nothing else held: a clean driver is left as it is
