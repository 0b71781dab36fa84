import asyncio.sslproto

from bastion.runtime import TLS_READ_BUFFER, tune_asyncio


def test_tls_read_buffer_is_shrunk():
    original = asyncio.sslproto.SSLProtocol.max_size
    try:
        tune_asyncio()
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
        assert TLS_READ_BUFFER >= 16 * 1024  # at least one full TLS record per read
    finally:
        asyncio.sslproto.SSLProtocol.max_size = original
