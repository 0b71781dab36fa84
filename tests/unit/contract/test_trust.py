from bastion.contract import ENDPOINTS
from bastion.contract.trust import VALIDATE_TRUST


def test_validate_is_public_and_listed() -> None:
    assert VALIDATE_TRUST.audience == "public" and VALIDATE_TRUST in ENDPOINTS
