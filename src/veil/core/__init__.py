"""The shared core: configuration, errors, storage adapters, logging, metrics and the web layer."""
