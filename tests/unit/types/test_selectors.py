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


@pytest.mark.parametrize("value", ["^prod", "prod$"])
def test_half_anchored_is_refused(value):
    with pytest.raises(ValueError, match="anchor it at both ends"):
        validate_string_value(value)


def test_wildcard_key_only_with_wildcard_value():
    from pydantic import ValidationError

    from bastion.types.access import RoleConditions

    with pytest.raises(ValidationError, match="wildcard label key"):
        RoleConditions(node_labels={"*": "prod"})
    assert RoleConditions(node_labels={"*": "*"}).node_labels == {"*": ["*"]}
