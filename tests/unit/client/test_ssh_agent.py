"""bsh's SSH agent protocol (pure): framing, request parsing, the core's answers; hypothesis
over arbitrary bytes (never an exception other than ProtocolError, never a signature for a key
the agent does not hold)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.client.ssh_agent import (
    MAX_MESSAGE,
    SSH_AGENT_FAILURE,
    SSH_AGENT_IDENTITIES_ANSWER,
    SSH_AGENT_SIGN_RESPONSE,
    SSH_AGENTC_REQUEST_IDENTITIES,
    SSH_AGENTC_SIGN_REQUEST,
    AgentCore,
    Framer,
    Identity,
    ProtocolError,
    RequestIdentities,
    SignRequest,
    Unsupported,
    encode_message,
    parse_request,
)

KEY = b"\x00\x00\x00\x13ecdsa-sha2-nistp256key"
CERT = b"\x00\x00\x00\x28ecdsa-sha2-nistp256-cert-v01@openssh.comcert"


def _s(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _core(signed: list[bytes]) -> AgentCore:
    def sign(data: bytes) -> bytes:
        signed.append(data)
        return b"SIG:" + data

    return AgentCore([Identity(CERT, "cert"), Identity(KEY, "key")], sign)


def _sign_request(blob: bytes, data: bytes, flags: int = 0) -> bytes:
    return bytes([SSH_AGENTC_SIGN_REQUEST]) + _s(blob) + _s(data) + flags.to_bytes(4, "big")


def test_identities_are_the_certificate_and_the_key() -> None:
    reply = _core([]).answer(RequestIdentities())
    body = reply[4:]
    assert body[0] == SSH_AGENT_IDENTITIES_ANSWER
    assert int.from_bytes(body[1:5], "big") == 2
    assert body[5:] == _s(CERT) + _s(b"cert") + _s(KEY) + _s(b"key")
    assert int.from_bytes(reply[:4], "big") == len(body)


def test_sign_only_for_our_keys() -> None:
    signed: list[bytes] = []
    core = _core(signed)
    for blob in (CERT, KEY):
        reply = core.answer(parse_request(_sign_request(blob, b"session data", 2)))
        assert reply == encode_message(SSH_AGENT_SIGN_RESPONSE, _s(b"SIG:session data"))
    assert core.answer(parse_request(_sign_request(b"other", b"x"))) == encode_message(
        SSH_AGENT_FAILURE
    )
    assert signed == [b"session data", b"session data"]


def test_a_failing_tpm_is_an_agent_failure() -> None:
    def broken(data: bytes) -> bytes:
        raise RuntimeError("TPM gone")

    core = AgentCore([Identity(KEY, "key")], broken)
    assert core.answer(SignRequest(KEY, b"x", 0)) == encode_message(SSH_AGENT_FAILURE)


def test_parse_requests() -> None:
    assert parse_request(bytes([SSH_AGENTC_REQUEST_IDENTITIES])) == RequestIdentities()
    assert parse_request(_sign_request(KEY, b"d", 4)) == SignRequest(KEY, b"d", 4)
    assert parse_request(b"") == Unsupported(-1)
    assert parse_request(bytes([17]) + _s(b"add a key")) == Unsupported(17)  # ADD_IDENTITY
    assert parse_request(_sign_request(KEY, b"d")[:-1]) == Unsupported(-1)  # short flags
    assert parse_request(_sign_request(KEY, b"d") + b"x") == Unsupported(-1)  # trailing
    assert parse_request(bytes([SSH_AGENTC_SIGN_REQUEST]) + b"\xff\xff\xff\xff") == Unsupported(-1)


def test_framer_splits_and_joins() -> None:
    framer = Framer()
    one, two = encode_message(11), encode_message(13, b"abc")
    stream = one + two
    assert framer.feed(stream[:3]) == []
    assert framer.feed(stream[3:7]) == [one[4:]]
    assert framer.feed(stream[7:]) == [two[4:]]


def test_framer_refuses_absurd_lengths() -> None:
    for size in (0, MAX_MESSAGE + 1):
        try:
            Framer().feed(size.to_bytes(4, "big") + b"x")
        except ProtocolError:
            continue
        raise AssertionError(f"length {size} accepted")


def test_a_whole_conversation() -> None:
    signed: list[bytes] = []
    core = _core(signed)
    stream = encode_message(SSH_AGENTC_REQUEST_IDENTITIES) + encode_message(
        SSH_AGENTC_SIGN_REQUEST, _s(KEY) + _s(b"abc") + b"\x00\x00\x00\x00"
    )
    framer = Framer()
    out = b"".join(core.receive(framer, stream[i : i + 5]) for i in range(0, len(stream), 5))
    replies = Framer().feed(out)
    assert [r[0] for r in replies] == [SSH_AGENT_IDENTITIES_ANSWER, SSH_AGENT_SIGN_RESPONSE]
    assert signed == [b"abc"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_message_body_gets_an_answer_and_signs_nothing_foreign(body: bytes) -> None:
    signed: list[bytes] = []
    request = parse_request(body)
    reply = _core(signed).answer(request)
    assert Framer().feed(reply)  # always one well-framed reply
    if signed:
        assert isinstance(request, SignRequest) and request.key_blob in (KEY, CERT)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_any_stream_is_answered_or_cut(chunks: list[bytes]) -> None:
    core, framer = _core([]), Framer()
    try:
        for chunk in chunks:
            core.receive(framer, chunk)
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=100), st.integers(0, 2**32 - 1))
def test_sign_requests_round_trip(blob: bytes, data: bytes, flags: int) -> None:
    assert parse_request(_sign_request(blob, data, flags)) == SignRequest(blob, data, flags)
