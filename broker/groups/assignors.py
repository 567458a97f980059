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
    """Balanced and sticky: a partition stays with its owner while the owner is under
    its share; the rest go to the subscriber with the fewest partitions."""
    out: Assignment = {m: {} for m in subs}
    load = dict.fromkeys(subs, 0)
    parts = [(t, p) for t, n in sorted(topics.items()) for p in range(n)]
    subscribers = {t: sorted(m for m, s in subs.items() if t in s) for t in topics}
    total = sum(len(subscribers[t]) and topics[t] for t in topics)
    quota = -(-total // len(subs)) if subs else 0  # ceil
    owner = {(t, p): m for m, a in current.items() if m in subs
             for t, ps in a.items() for p in ps}
    rest = []
    for t, p in parts:
        m = owner.get((t, p))
        if m is not None and t in subs[m] and load[m] < quota:
            out[m].setdefault(t, set()).add(p)
            load[m] += 1
        elif subscribers[t]:
            rest.append((t, p))
    for t, p in rest:
        m = min(subscribers[t], key=lambda x: (load[x], x))
        out[m].setdefault(t, set()).add(p)
        load[m] += 1
    return out


ASSIGNORS = {"uniform": uniform_assign, "range": range_assign}
DEFAULT_ASSIGNOR = "uniform"
