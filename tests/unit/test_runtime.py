import asyncio
import asyncio.sslproto
import gc
from unittest import mock

import pytest

from bastion import runtime
from bastion.runtime import (
    EVENT_LOOP_ENV,
    GC_THRESHOLDS,
    MMAP_THRESHOLD,
    TLS_READ_BUFFER,
    TRIM_THRESHOLD,
    as_transport,
    event_loop_name,
    loop_factory,
    tune_runtime,
)


def test_tls_read_buffer_is_shrunk_and_gc_runs_less_often() -> None:
    original = asyncio.sslproto.SSLProtocol.max_size
    thresholds = gc.get_threshold()
    try:
        with mock.patch.object(runtime, "_tune_malloc") as mallopt:
            tune_runtime()
        mallopt.assert_called_once()
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
        assert TLS_READ_BUFFER >= 16 * 1024  # at least one full TLS record per read
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > thresholds[0]
        assert gc.isenabled()  # tuned, never switched off
    finally:
        asyncio.sslproto.SSLProtocol.max_size = original
        gc.set_threshold(*thresholds)


def test_mmap_threshold_is_above_the_loops_256_kib_reads() -> None:
    # recv(256 KiB) / SSLObject.read(256 KiB) plus the bytes header must come from the heap,
    # and freeing one must not trim the heap's top (two brk calls and page faults per read).
    assert MMAP_THRESHOLD > 256 * 1024 + 64
    assert TRIM_THRESHOLD >= 4 * MMAP_THRESHOLD


def test_malloc_is_told_both_thresholds() -> None:
    calls: list[tuple[int, int]] = []
    libc = mock.Mock()
    libc.mallopt.side_effect = lambda param, value: calls.append((param, value))
    with mock.patch.object(runtime.ctypes, "CDLL", return_value=libc):
        runtime._tune_malloc()
    assert calls == [(-3, MMAP_THRESHOLD), (-1, TRIM_THRESHOLD)]  # <malloc.h>'s numbers


def test_uvloop_is_the_default_and_asyncio_is_chosen_by_the_variable() -> None:
    import uvloop  # a dependency (pyproject); the fallback is tested below

    assert event_loop_name({}) == "uvloop"
    assert event_loop_name({EVENT_LOOP_ENV: "uvloop"}) == "uvloop"
    assert event_loop_name({EVENT_LOOP_ENV: " AsyncIO "}) == "asyncio"
    assert loop_factory({}) is uvloop.new_event_loop
    assert loop_factory({EVENT_LOOP_ENV: "asyncio"}) is asyncio.new_event_loop


def test_asyncio_when_uvloop_is_not_installed() -> None:
    with mock.patch.dict("sys.modules", {"uvloop": None}):
        assert event_loop_name({}) == "asyncio"
        assert loop_factory({}) is asyncio.new_event_loop


def test_run_uses_the_chosen_loop() -> None:
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    with mock.patch.dict("os.environ", {EVENT_LOOP_ENV: "asyncio"}):
        assert runtime.run(kind()).startswith("asyncio")


class _UvloopLike:
    """Implements the transport interface without subclassing asyncio's classes."""

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...


def test_as_transport_accepts_duck_typed_transports_and_refuses_others() -> None:
    transport = _UvloopLike()
    assert as_transport(transport) is transport  # type: ignore[arg-type,comparison-overlap]
    with pytest.raises(TypeError):
        as_transport(None)
    with pytest.raises(TypeError):
        as_transport(object())  # type: ignore[arg-type]


def test_the_startup_heap_is_frozen_out_of_later_full_collections() -> None:
    started = [[n] for n in range(1000)]  # long-lived (GC-tracked) objects built at start-up
    assert gc.is_tracked(started[0])
    before = gc.get_freeze_count()
    try:
        runtime.freeze_startup_heap()
        assert gc.get_freeze_count() >= before + len(started)
        oldest = {id(obj) for obj in gc.get_objects(generation=2)}
        assert not any(id(obj) in oldest for obj in started)  # not scanned by a full collection
    finally:
        gc.unfreeze()
