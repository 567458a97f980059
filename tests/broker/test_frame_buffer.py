"""Large request frames are read into buffers that are not zeroed first."""
import sys
import tracemalloc

from broker.server import frame_buffer


def test_frame_buffer_is_a_bytearray_of_the_size_asked():
    for size in (0, 1, 65_537, 1 << 20):
        buf = frame_buffer(size)
        assert type(buf) is bytearray and len(buf) == size
        buf[:] = b"\xab" * size
        assert buf.count(0xAB) == size


def test_frame_buffer_holds_no_extra_reference():
    buf = frame_buffer(1 << 20)
    assert sys.getrefcount(buf) == 2  # `buf` and the call's argument: nothing leaked
    tracemalloc.start()
    try:
        for _ in range(50):
            frame_buffer(1 << 20)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 2 << 20, current  # 50 MiB if every buffer leaked
