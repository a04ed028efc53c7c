"""Ollama's model API (`/api/...`), as the `ollama` client and CLI use it."""
