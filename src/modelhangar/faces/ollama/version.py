"""The Ollama version this face answers as, apart from the routes so that start-up answers
`/api/version` before the face is imported (`startup.py`)."""

OLLAMA_COMPAT_VERSION = "0.12.0"
