from bastion.agent.app_runner import apps_from_config
from bastion.config.schema import FileConfig


def test_configured_apps_are_heartbeated_with_the_agent_host_id():
    config = FileConfig.model_validate(
        {"app_service": {"enabled": True, "apps": [{"name": "web", "uri": "https://w:8443"}]}}
    )
    (app,) = apps_from_config(config, "h-1")
    assert app.metadata.name == "web" and app.spec.host_id == "h-1"
    assert not app.spec.insecure_skip_verify
