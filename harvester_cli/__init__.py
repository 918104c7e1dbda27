"""harvester-cli: PanDA Harvester's job as composable one-shot commands."""

__version__ = "0.1.0"
