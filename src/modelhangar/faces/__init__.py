"""Thin HTTP adapters, one package per API: they map protocol shapes to the core and back."""
