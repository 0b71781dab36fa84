import asyncio.sslproto
import gc

from bastion.runtime import GC_THRESHOLDS, TLS_READ_BUFFER, tune_runtime


def test_tls_read_buffer_is_shrunk_and_gc_runs_less_often():
    original = asyncio.sslproto.SSLProtocol.max_size
    thresholds = gc.get_threshold()
    try:
        tune_runtime()
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
        assert TLS_READ_BUFFER >= 16 * 1024  # at least one full TLS record per read
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > thresholds[0]
        assert gc.isenabled()  # tuned, never switched off
    finally:
        asyncio.sslproto.SSLProtocol.max_size = original
        gc.set_threshold(*thresholds)
