"""The web UI at `/ui/`: server-rendered pages over the same core as every face (README)."""

from modelhangar.web.routes import routes, unauthorized

__all__ = ["routes", "unauthorized"]
