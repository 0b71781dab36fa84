from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config.export import (
    AuditExportConfig,
    ElasticsearchOutputConfig,
    FileOutputConfig,
    SplunkHecOutputConfig,
    SyslogOutputConfig,
)
from bastion.errors import BadParameter


def parse(*outputs: dict[str, Any], **top: Any) -> AuditExportConfig:
    return AuditExportConfig.model_validate({"outputs": list(outputs), **top})


def test_every_output_type() -> None:
    cfg = parse(
        {"type": "file", "path": "/var/log/bastion/audit.jsonl"},
        {"type": "syslog", "addr": "siem:6514", "tls": True, "ca_file": "/ca.pem"},
        {"type": "splunk_hec", "url": "https://splunk:8088/services/collector/event", "token": "t"},
        {"type": "elasticsearch", "url": "https://es:9200/_bulk", "api_key": "k"},
        poll_interval="5s",
        retry_max="2m",
    )
    kinds = [type(o) for o in cfg.outputs]
    assert kinds == [
        FileOutputConfig,
        SyslogOutputConfig,
        SplunkHecOutputConfig,
        ElasticsearchOutputConfig,
    ]
    assert cfg.poll_interval == timedelta(seconds=5)
    assert cfg.retry_max == timedelta(minutes=2)
    assert cfg.outputs[0].batch_size == 500
    assert "t" not in repr(cfg.outputs[2]).split("token")[-1][:5]


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        ([], "at least 1"),
        ([{"type": "kafka"}], "does not match any of the expected tags|union_tag_invalid|kafka"),
        ([{"type": "file"}], "path"),
        ([{"type": "syslog", "addr": "siem:port"}], "port must be a number"),
        ([{"type": "syslog", "addr": "siem", "ca_file": "/ca"}], "need tls: true"),
        ([{"type": "syslog", "addr": "s", "tls": True, "cert_file": "/c"}], "go together"),
        ([{"type": "splunk_hec", "url": "https://s/x"}], "token"),
        ([{"type": "elasticsearch", "url": "es:9200"}], "http://"),
        (
            [{"type": "elasticsearch", "url": "http://e/_bulk", "username": "u", "api_key": "k"}],
            "not both",
        ),
        ([{"type": "file", "path": "a"}, {"type": "file", "path": "b"}], "unique name"),
        ([{"type": "file", "path": "a", "name": "../x"}], "invalid output name"),
        ([{"type": "file", "path": "a", "batch_size": 0}], "greater than or equal to 1"),
        ([{"type": "file", "path": "a", "colour": "red"}], "colour"),
    ],
)
def test_invalid(outputs: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        parse(*outputs)


def test_in_file_config(tmp_path: Any) -> None:
    from bastion.config.schema import load_config

    path = tmp_path / "bastion.yaml"
    path.write_text(
        "audit_export:\n  outputs:\n    - type: file\n      path: /tmp/a.jsonl\n"
        "    - type: file\n      name: second\n      path: /tmp/b.jsonl\n"
    )
    cfg = load_config(path).audit_export
    assert cfg is not None and [o.name for o in cfg.outputs] == ["", "second"]
    path.write_text("audit_export:\n  outputs:\n    - type: syslog\n")
    with pytest.raises(BadParameter, match="addr"):
        load_config(path)
    assert load_config(None).audit_export is None
