import base64
import json

import pytest

from bastion.errors import AccessDenied
from bastion.mfa.responses import challenge_of, explain


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_challenge_of_reads_client_data():
    client = {"type": "webauthn.get", "challenge": "abc", "origin": "https://x"}
    response = {"response": {"clientDataJSON": _b64(json.dumps(client).encode())}}
    assert challenge_of(response) == ("abc", client)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "text",
        {},
        {"response": "x"},
        {"response": {"clientDataJSON": "!!!"}},
        {"response": {"clientDataJSON": _b64(b"[1]")}},
        {"response": {"clientDataJSON": _b64(b'{"challenge": ""}')}},
        {"response": {"clientDataJSON": _b64(b'{"challenge": 5}')}},
    ],
)
def test_challenge_of_refuses_garbage(bad):
    with pytest.raises(AccessDenied, match="malformed"):
        challenge_of(bad)


def test_explain_names_the_problem():
    assert explain(ValueError('Unexpected client data origin "x"')).startswith("wrong origin")
    assert "rp_id" in explain(ValueError("Unexpected RP ID hash"))
    assert "user verification" in explain(ValueError("User verification is required but"))
    assert "does not verify" in explain(ValueError("Could not verify authentication signature"))
    assert explain(ValueError("other")) == "other"
