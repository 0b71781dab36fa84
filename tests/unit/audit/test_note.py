"""C2SP signed notes and checkpoints, anchored to the golang.org/x/mod/sumdb/note test vector."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.note import (
    Checkpoint,
    format_checkpoint,
    key_id,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from bastion.errors import BadParameter

# golang.org/x/mod/sumdb/note note_test.go (Ed25519 is deterministic: we must match byte for byte)
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def go_private_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == 1
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


def test_matches_the_go_reference_vector():
    key = go_private_key()
    assert verifier_key("PeterNeumann", key.public_key()) == GO_VKEY
    assert key_id("PeterNeumann", key.public_key()).hex() == "c74f20a3"
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_NOTE
    assert open_note(GO_NOTE, parse_verifier_key(GO_VKEY)) == GO_TEXT


def test_tampered_note_wrong_key_and_malformed_notes_are_refused():
    verifier = parse_verifier_key(GO_VKEY)
    with pytest.raises(BadParameter, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), verifier)
    other = Ed25519PrivateKey.generate()
    forged = sign_note(GO_TEXT, "PeterNeumann", other)  # same name, other key: other key id
    with pytest.raises(BadParameter, match="no signature by PeterNeumann"):
        open_note(forged, verifier)
    # Right key id, wrong signature bytes.
    blob = base64.b64decode(GO_NOTE.rsplit(" ", 1)[1])
    bad = GO_TEXT + "\n\u2014 PeterNeumann " + base64.b64encode(blob[:4] + bytes(64)).decode()
    with pytest.raises(BadParameter, match="does not verify"):
        open_note(bad + "\n", verifier)
    for junk in ("", GO_TEXT, GO_TEXT + "\n-- PeterNeumann abc\n", GO_NOTE + "\x01"):
        with pytest.raises(BadParameter):
            open_note(junk, verifier)


def test_cosignatures_by_other_keys_are_ignored():
    key, witness = go_private_key(), Ed25519PrivateKey.generate()
    cosigned = GO_NOTE + sign_note(GO_TEXT, "witness.example", witness).split("\n\n")[1]
    assert open_note(cosigned, parse_verifier_key(GO_VKEY)) == GO_TEXT
    assert open_note(
        cosigned, parse_verifier_key(verifier_key("witness.example", witness.public_key()))
    )
    assert key is not None


def test_verifier_key_errors():
    for bad in ("x", "a+b+c", GO_VKEY.replace("c74f20a3", "c74f20a4"), "a b+00000000+AQ=="):
        with pytest.raises(BadParameter):
            parse_verifier_key(bad)


@given(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
    st.integers(0, 2**63),
    st.binary(min_size=32, max_size=32),
)
def test_checkpoint_round_trip(origin, size, root):
    cp = Checkpoint(origin, size, root)
    text = format_checkpoint(cp)
    assert text == f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    assert parse_checkpoint(text) == cp


def test_checkpoint_signed_and_parse_errors():
    key = Ed25519PrivateKey.generate()
    cp = Checkpoint("bastion.test/audit", 7, bytes(range(32)), ("extra",))
    note = sign_note(format_checkpoint(cp), cp.origin, key)
    verifier = parse_verifier_key(verifier_key(cp.origin, key.public_key()))
    assert parse_checkpoint(open_note(note, verifier)) == cp
    for bad in ("o\n1\n", "o\n01\nAAAA\n", "o\nx\nAAAA\n", "o\n1\n!!\n", "o\n1\nAAAA\n", "o\n1\n"):
        with pytest.raises(BadParameter):
            parse_checkpoint(bad)
    with pytest.raises(BadParameter):
        format_checkpoint(Checkpoint("a\nb", 1, bytes(32)))
