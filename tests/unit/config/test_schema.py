import pytest
import yaml

from bastion.config.schema import FileConfig, load_config, sample_config
from bastion.errors import BadParameter


def test_sample_config_is_valid_and_matches_defaults(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(sample_config())
    loaded = load_config(path)
    assert loaded == FileConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("storage: {type: mongo}\n", "storage.type"),
        ("auth_service: {listen_addr: 'x:notaport'}\n", "port must be a number"),
        ("bogus: 1\n", "bogus: unknown field"),
        ("storage: [\n", "invalid YAML at line"),
        ("- a\n", "expected a mapping"),
        ("ssh_service: {node_name: 'a b'}\n", "ssh_service.node_name: invalid node name 'a b'"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "b.yaml"
    path.write_text(text)
    with pytest.raises(BadParameter) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(BadParameter, match="cannot read config"):
        load_config("/nonexistent/bastion.yaml")


def test_overrides_and_public_names():
    cfg = load_config(None, data_dir="/tmp/x", cluster_name="c")
    assert cfg.data_dir == "/tmp/x" and cfg.resolved_cluster_name() == "c"
    names, ips = cfg.auth_public_names()
    assert "localhost" in names and "127.0.0.1" in ips
    assert yaml.safe_load(sample_config())["auth_service"]["listen_addr"] == "127.0.0.1:3025"


def _config_keys(model: type, prefix: str = "") -> set[str]:
    """Dotted keys of the config file (nested sections, not list items nor SIEM outputs)."""
    import typing

    from pydantic import BaseModel

    keys = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        key = prefix + name
        sections = [
            t
            for t in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if not sections or key == "audit_export.outputs":  # outputs: docs/export.md
            keys.add(key)
        for t in sections:
            keys |= _config_keys(t, key + ".") if key != "audit_export.outputs" else set()
    return keys


def test_every_config_key_is_in_the_configuration_docs():
    """docs/configuration.md's table names every key (``a.b`` / ``c`` rows share the prefix)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    documented = set()
    for row in re.findall(r"^\| ((?:`[^`]+`(?: / )?)+) \|", doc, re.M):
        names = re.findall(r"`([^`]+)`", row)
        base = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        documented |= {n if "." in n or not base else f"{base}.{n}" for n in names}
    missing = {
        key
        for key in _config_keys(FileConfig)
        if key not in documented and key.rsplit(".", 1)[0] not in documented
        # a list of sub-entries documented as a whole, e.g. ssh_service.commands {name, ...}
    }
    assert not missing, f"add to docs/configuration.md: {sorted(missing)}"
