"""The package version, read by the manifest writer and by pyproject (dynamic version)."""
__version__ = "0.1.0"
