import pytest

import bastion.errors as errors


def test_exports_match_all():
    public = {n for n in dir(errors) if not n.startswith("_") and n[0].isupper()}
    assert public - {"ClassVar"} == {n for n in errors.__all__ if n[0].isupper()}


@pytest.mark.parametrize(
    "cls",
    [
        errors.NotFound,
        errors.AccessDenied,
        errors.LimitExceeded,
        errors.CompareFailed,
        errors.BadParameter,
    ],
)
def test_round_trip_through_code(cls):
    err = errors.error_from_code(cls.code, "m")
    assert type(err) is cls and str(err) == "m"


def test_unknown_code_is_generic():
    assert type(errors.error_from_code("weird", "m")) is errors.BastionError
