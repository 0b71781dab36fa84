"""Command-line tools: ``bastion`` (daemon), ``bctl`` (admin), ``bsh`` (user), ``bbot`` (bots)."""

__all__: list[str] = []
