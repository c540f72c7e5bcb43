"""Poison rows: a chunk that keeps killing engines is split until the record that does it stands alone.

Every attempt at a unit leaves a record (``upft_ray.io.chunk_store``); an attempt that never ended
died with its engine (the actor records why when it can: an engine error, a hang). From those
records, :func:`plan_units` says what an attempt at a chunk should do:

- a chunk whose attempts died fewer than ``WHOLE_DEATHS`` times runs whole (one death is any node
  loss; two in a row on the same chunk is suspicious);
- past that it is split in halves, recursively: a range runs alone on its engine (exclusively, so a
  death is pinned on it), and a range that died once is split again;
- a single record that died ``SINGLE_DEATHS`` times alone is quarantined: it becomes a rejected row
  with reason ``engine_crash: <why>``, and every other record of the chunk is still written.

A chunk needs at most WHOLE_DEATHS + 2 x ceil(log2(records)) + SINGLE_DEATHS deaths to isolate one
poison record; :func:`death_budget` allows twice that, and a chunk past it fails the run with the
deaths' reasons instead of restarting engines for ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from upft_ray.io.chunk_store import ChunkStore, unit_key

WHOLE_DEATHS = 2
SINGLE_DEATHS = 2
NO_REASON = "the engine process died without an error (killed or crashed)"
ENGINE_CRASH = "engine_crash"


@dataclass(frozen=True)
class Unit:
    """Records [lo, hi) of a chunk to run (whole: lo 0, hi the chunk's record count) or to quarantine."""
    chunk: int
    lo: int
    hi: int
    whole: bool
    quarantine: str = ""  # why the record is set aside (a single record that keeps killing engines)

    @property
    def key(self) -> str:
        return unit_key(self.chunk) if self.whole else unit_key(self.chunk, self.lo, self.hi)


class PoisonChunk(RuntimeError):
    """A chunk went on killing engines past its death budget."""


def died(attempts: list[dict]) -> list[dict]:
    """Return the attempts that died: recorded as died, or never ended (a normal attempt is retried only
    after its actor is gone; a speculative one that never ended may still be running, so it counts only
    when it recorded its death)."""
    return [a for a in attempts if a["status"] == "died" or (a["status"] == "running" and a["kind"] != "speculative")]


def death_reason(attempts: list[dict]) -> str:
    """Return why the engine died under these attempts (the last recorded reason, or NO_REASON)."""
    reasons = [a.get("why") for a in died(attempts) if a.get("why")]
    return reasons[-1] if reasons else NO_REASON


def death_budget(records: int) -> int:
    """Return how many engine deaths one chunk of ``records`` records may cost before the run fails."""
    return 2 * (WHOLE_DEATHS + 2 * math.ceil(math.log2(max(records, 1)) + 1) + SINGLE_DEATHS)


def plan_units(store: ChunkStore, chunk: int, records: int) -> list[Unit]:
    """Return the units an attempt at ``chunk`` should run now, in order (empty once it is committed).

    Raises PoisonChunk when the chunk's engine deaths exceed ``death_budget``."""
    whole = unit_key(chunk)
    if store.committed(whole):
        return []
    whole_deaths = died(store.attempts(whole))
    if len(whole_deaths) < WHOLE_DEATHS:
        return [Unit(chunk, 0, records, True)]
    units = _split(store, chunk, 0, records)
    everything = store.chunk_attempts(chunk)  # ranges split since count too, not only the current ones
    total = len(died(everything))
    if total > death_budget(records):
        raise PoisonChunk(f"chunk {chunk} killed {total} engines (budget {death_budget(records)}): more of its "
                          f"records kill the engine than isolation can set aside (a broken engine or model?); "
                          f"last reason: {death_reason(everything)}")
    return units


def _split(store: ChunkStore, chunk: int, lo: int, hi: int) -> list[Unit]:
    """Return the units of records [lo, hi): each half whole unless it died, then split again."""
    if hi - lo == 0:
        return []
    mid = (lo + hi + 1) // 2 if hi - lo > 1 else hi
    out = []
    for a, b in ((lo, mid), (mid, hi)) if hi - lo > 1 else ((lo, hi),):
        key = unit_key(chunk, a, b)
        if store.committed(key):
            continue
        attempts = store.attempts(key)
        deaths = len(died(attempts))
        if b - a == 1 and deaths >= SINGLE_DEATHS:
            out.append(Unit(chunk, a, b, False, f"{ENGINE_CRASH}: {death_reason(attempts)}"))
        elif b - a > 1 and deaths >= 1:
            out.extend(_split(store, chunk, a, b))
        else:
            out.append(Unit(chunk, a, b, False))
    return out
