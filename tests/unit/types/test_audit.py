from bastion.types.audit import EVENT_CODES, event_code


def test_codes_are_unique_and_outcome_suffixed():
    assert len(set(EVENT_CODES.values())) == len(EVENT_CODES)
    assert event_code("user.login", "success") == "T1000I"
    assert event_code("user.login", "failure") == "T1000W"
