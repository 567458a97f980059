"""Server-side assignors of KIP-848 consumer groups: `uniform` and `range`. Pure.

Input: each member's subscribed topic names, each topic's partition count, and (for
stickiness) each member's current assignment. Output: member -> topic -> partitions.
"""
from __future__ import annotations

Assignment = dict[str, dict[str, set[int]]]


def range_assign(subs: dict[str, set[str]], topics: dict[str, int],
                 current: Assignment) -> Assignment:
    """Per topic: the sorted subscribers get contiguous ranges (the first ones one more)."""
    out: Assignment = {m: {} for m in subs}
    for topic, n in sorted(topics.items()):
        members = sorted(m for m, s in subs.items() if topic in s)
        if not members:
            continue
        per, extra = divmod(n, len(members))
        start = 0
        for i, m in enumerate(members):
            count = per + (1 if i < extra else 0)
            if count:
                out[m][topic] = set(range(start, start + count))
            start += count
    return out


def uniform_assign(subs: dict[str, set[str]], topics: dict[str, int],
                   current: Assignment) -> Assignment:
    """Balanced and sticky: a partition stays with its owner while the owner is within
    its share (`total // members`, one more for the first `total % members` that need
    it); the rest go to the subscriber with the fewest partitions."""
    out: Assignment = {m: {} for m in subs}
    load = dict.fromkeys(subs, 0)
    subscribers = {t: sorted(m for m, s in subs.items() if t in s) for t in topics}
    parts = [(t, p) for t, n in sorted(topics.items()) if subscribers[t] for p in range(n)]
    base, extra = divmod(len(parts), len(subs)) if subs else (0, 0)
    owner = {(t, p): m for m, a in current.items() if m in subs
             for t, ps in a.items() for p in ps}

    def give(m: str, t: str, p: int) -> None:
        out[m].setdefault(t, set()).add(p)
        load[m] += 1

    over, rest = [], []
    for t, p in parts:
        m = owner.get((t, p))
        if m is None or t not in subs[m]:
            rest.append((t, p))
        elif load[m] < base:
            give(m, t, p)
        else:
            over.append((m, t, p))
    for m, t, p in over:
        if extra and load[m] == base:
            give(m, t, p)
            extra -= 1
        else:
            rest.append((t, p))
    for t, p in rest:
        give(min(subscribers[t], key=lambda x: (load[x], x)), t, p)
    return out


ASSIGNORS = {"uniform": uniform_assign, "range": range_assign}
DEFAULT_ASSIGNOR = "uniform"
