"""CLI commands, one module each (see ambcore.cli)."""
