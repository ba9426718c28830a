"""The version of refsam (written into reference-case manifests and saved files)."""

__version__ = "0.2.0"
