"""Poison-row isolation as a policy, on real chunk-store records: a simulated engine that dies on some
records (every attempt that holds one dies; the others commit) until plan_units has set them aside.
One poison record costs a bounded number of deaths and only itself; several are all isolated; an engine
that dies on everything fails the chunk once its death budget is spent, not for ever."""

from __future__ import annotations

import pytest

from upft_ray.execution.isolation import SINGLE_DEATHS, WHOLE_DEATHS, PoisonChunk, death_budget, plan_units
from upft_ray.io.chunk_store import ChunkStore


def drive(store: ChunkStore, chunk: int, records: int, kills) -> tuple[int, list]:
    """Run attempts at ``chunk`` until it is committed; an attempt dies at the first unit holding a record
    for which ``kills`` is true. Return (deaths, the quarantined units)."""
    deaths, quarantined = 0, []
    for _ in range(10 * death_budget(records)):
        units = plan_units(store, chunk, records)
        if not units:
            return deaths, quarantined
        for unit in units:
            attempt = store.start_attempt(unit.key, "normal", "node", "actor")
            if not unit.quarantine and any(kills(r) for r in range(unit.lo, unit.hi)):
                store.end_attempt(attempt, "died", f"engine died on a record of {unit.key}")
                deaths += 1
                break  # the actor is gone: its later units are not run by this attempt
            store.commit(unit.key, {"lo": unit.lo, "hi": unit.hi}, None, None, attempt["id"])
            store.end_attempt(attempt, "committed")
            quarantined += [unit] if unit.quarantine else []
    raise AssertionError("the chunk never finished")


@pytest.mark.parametrize("records,poison", [(8, 5), (8, 0), (8, 7), (1, 0), (37, 36), (512, 301)])
def test_one_poison_record_is_isolated_alone_within_a_bounded_number_of_deaths(tmp_path, records, poison):
    store = ChunkStore(tmp_path / "stage")
    deaths, quarantined = drive(store, 0, records, lambda r: r == poison)
    assert [(u.lo, u.hi) for u in quarantined] == [(poison, poison + 1)]
    assert quarantined[0].quarantine.startswith("engine_crash: engine died on a record")
    assert deaths <= WHOLE_DEATHS + (records - 1).bit_length() + SINGLE_DEATHS
    assert store.chunk_units(0, records) is not None  # every other record committed


def test_several_poison_records_are_all_isolated(tmp_path):
    poison = {3, 4, 60, 61, 127}
    deaths, quarantined = drive(ChunkStore(tmp_path / "stage"), 2, 128, lambda r: r in poison)
    assert sorted(u.lo for u in quarantined) == sorted(poison) and deaths <= death_budget(128)


def test_an_engine_that_dies_on_everything_fails_the_chunk_once_its_budget_is_spent(tmp_path):
    store = ChunkStore(tmp_path / "stage")
    with pytest.raises(PoisonChunk, match=r"chunk 1 killed \d+ engines \(budget \d+\).*last reason: engine died"):
        drive(store, 1, 64, lambda r: True)
    died = [a for a in store.chunk_attempts(1) if a["status"] == "died"]
    assert death_budget(64) < len(died) <= death_budget(64) + 1
