"""Model builders, one file per family, and the registry of names."""
