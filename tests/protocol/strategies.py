"""Hypothesis strategies that build random messages of any generated class and version,
driven by the classes' FIELDS tables (so they follow the specs without hand-written lists)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from broker.protocol.errors import ErrorCode

INT_RANGES = {"int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1),
              "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
              "uint16": (0, 2**16 - 1)}
# kio maps some fields to datetimes/timedeltas/enums: keep values where those conversions hold.
KIO_INTS = (0, 1, 7, 100, 1000, 86_400_000)  # kio rejects negative timestamps
KIO_ERROR = st.sampled_from([int(c) for c in ErrorCode])


def primitive(kind: str, name: str, for_kio: bool) -> st.SearchStrategy[Any]:
    if kind in INT_RANGES:
        if for_kio:
            if name.endswith("error_code") and kind == "int16":
                return KIO_ERROR
            lo, hi = INT_RANGES[kind]
            return st.sampled_from([i for i in KIO_INTS if lo <= i <= hi])
        lo, hi = INT_RANGES[kind]
        return st.integers(lo, hi)
    if kind == "bool":
        return st.booleans()
    if kind == "float64":
        return st.floats(allow_nan=False)
    if kind == "uuid":
        return st.binary(min_size=16, max_size=16)
    if kind == "string":
        return st.text(max_size=12)
    if kind == "bytes":
        return st.binary(max_size=12)
    if kind == "records":
        return st.binary(max_size=40)
    raise AssertionError(kind)


def message(cls: type, version: int, flexible: bool, *, for_kio: bool = False,
            depth: int = 0) -> st.SearchStrategy[Any]:
    """Random instances of ``cls`` using only the fields present in ``version``."""
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    known_tags: set[int] = set()
    for name, kind, versions, nullable, tag, tagged, sub in cls.FIELDS:
        if not versions[0] <= version <= versions[1]:
            continue
        if tag is not None and tagged is not None and tagged[0] <= version <= tagged[1]:
            known_tags.add(tag)
        if sub is not None:
            elem = message(sub, version, flexible, for_kio=for_kio, depth=depth + 1)
        else:
            elem = primitive(kind.removeprefix("[]"), name, for_kio)
        s = st.lists(elem, max_size=3 if depth < 2 else 2) if kind.startswith("[]") else elem
        if nullable is not None and nullable[0] <= version <= nullable[1]:
            s = st.none() | s
        kwargs[name] = s
    if flexible and not for_kio:
        kwargs["unknown_tags"] = st.none() | st.lists(
            st.tuples(st.integers(50, 300), st.binary(max_size=6)), max_size=2,
            unique_by=lambda t: t[0],
        ).map(lambda tags: sorted(tags) or None)
    return st.builds(cls, **kwargs)
