"""Kafka retention applied to closed segments (offloaded sections) only."""
from broker.retention import trim_point

H = 3_600_000


def test_expired_prefix_goes_the_rest_stays():
    now = 10 * H
    sections = [(0, 10, 1 * H, 100), (10, 20, 2 * H, 100), (20, 30, 9 * H, 100),
                (30, 40, 1 * H, 100)]  # an old CreateTime after a new one: stays, as Kafka
    assert trim_point(sections, now, 5 * H, -1) == 20
    assert trim_point(sections, now, -1, -1) == 0
    assert trim_point([], now, 1, 1) == 0


def test_retention_bytes_drops_oldest_until_under_the_limit():
    sections = [(0, 10, 0, 100), (10, 20, 0, 100), (20, 30, 0, 100)]
    assert trim_point(sections, 0, -1, 150) == 20
    assert trim_point(sections, 0, -1, 300) == 0
