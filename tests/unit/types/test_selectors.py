import pytest

from bastion.types.selectors import validate_label_selector, validate_string_value


def test_plain_star_regex_template():
    for value in ["prod", "*", "^web-[0-9]+$", "{{internal.logins}}"]:
        assert validate_string_value(value) == value


@pytest.mark.parametrize("value", ["^(prod", "[a-$", "{{internal.logins", "{{nope.x}}"])
def test_invalid(value):
    with pytest.raises(ValueError):
        validate_string_value(value)


def test_selector_error_names_key():
    with pytest.raises(ValueError, match="^env: invalid regular expression"):
        validate_label_selector({"env": ["ok", "^(bad"]})
