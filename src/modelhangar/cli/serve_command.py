"""`hangar serve`: kept apart from the other commands so that starting a server imports only what
serving needs (not the HTTP client, not rich)."""

from __future__ import annotations

import argparse
import json
import sys

from modelhangar import __version__
from modelhangar.cli.errors import CliError
from modelhangar.cli.settings import settings_from_env, with_host


def _check_bindable(host: str, port: int) -> None:
    """Fail in one line before opening the store if the address cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CliError(f"cannot serve on {host}:{port}: {e.strerror}") from e
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise CliError(f"cannot serve on {host}:{port}: {e.strerror or e}") from e


def cmd_serve(args: argparse.Namespace) -> int:
    settings = with_host(settings_from_env(args.data_dir), args.host)
    from modelhangar.guards import is_loopback

    if settings.auth == "local" and not is_loopback(settings.host):
        note = (
            f"HANGAR_AUTH=local: anonymous access is loopback only; clients reaching {settings.host} "
            "from elsewhere need a token (hangar user add NAME, hangar token add USER)"
        )
        doc = {"message": note, "auth": "local", "host": settings.host}
        print(json.dumps(doc) if args.json else f"modelhangar: {note}", file=sys.stderr, flush=True)
    tls = (args.tls_cert, args.tls_key)
    if any(tls) and not all(tls):
        raise CliError("--tls-cert and --tls-key go together")
    for path in filter(None, tls):
        try:
            open(path, "rb").close()
        except OSError as e:
            raise CliError(f"cannot read {path}: {e.strerror or e}") from e
    _check_bindable(settings.host, settings.port)
    if settings.blobs.startswith("s3://"):  # a wrong bucket or credential fails here, not at the first upload
        from modelhangar.core.s3blobs import BlobStoreConfigError, check_bucket

        try:
            check_bucket(settings.blobs, path_style=settings.s3_path_style)
        except BlobStoreConfigError as e:
            raise CliError(str(e)) from None
    from modelhangar.core import blob_location

    try:  # a migration running, or HANGAR_BLOBS not where the catalog says the blobs are (README)
        blob_location.preflight(settings.database_url, settings.blobs, settings.home)
    except (blob_location.BlobLocationMismatch, blob_location.StoreBusy) as e:
        raise CliError(str(e)) from None
    from modelhangar import startup

    url = settings.base_url.replace("http://", "https://", 1) if args.tls_cert else settings.base_url
    if args.json:
        doc = {"message": "serving", "version": __version__, "home": str(settings.home)}
        print(json.dumps({**doc, "url": url}), file=sys.stderr, flush=True)
    else:
        print(
            f"modelhangar {__version__}: serving {settings.home} at {url}",
            file=sys.stderr,
            flush=True,
        )
    try:
        startup.run_server(settings, json_log=args.json, tls_cert=args.tls_cert, tls_key=args.tls_key)
    except SystemExit as e:  # uvicorn exits when startup fails, after logging why
        return 0 if e.code in (0, None) else 1
    return 0
