"""Configuration: the YAML file schema and loading it with clear errors."""

from bastion.config.schema import FileConfig, load_config, sample_config

__all__ = ["FileConfig", "load_config", "sample_config"]
