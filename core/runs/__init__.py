"""A run's configuration and its directory."""
