"""modelhangar: a self-hosted model registry with safe deletion."""

__version__ = "0.1.0"
