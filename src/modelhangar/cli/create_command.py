"""`hangar create`: a Modelfile (or `--from BASE`) into `POST /api/create`, uploading local files first."""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from modelhangar.cli.client import CHUNK, Client
from modelhangar.cli.errors import CliError
from modelhangar.cli.modelfile import Modelfile, ModelfileError, local_file, parse_modelfile
from modelhangar.cli.output import console, human_size, print_json, say
from modelhangar.cli.wording import model_name

BIG_FILE = 32 * 1000 * 1000
Note = Callable[[str], None]


def _progress(total: int) -> Progress:
    """A transfer bar on stderr, shown only for big files on a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        console=console(stderr=True),
        transient=True,
        disable=total < BIG_FILE or not sys.stderr.isatty(),
    )


def _sha256(path: Path, progress: Progress) -> str:
    task = progress.add_task(f"hashing {path.name}", total=path.stat().st_size)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            progress.advance(task, len(chunk))
    progress.remove_task(task)
    return f"sha256:{h.hexdigest()}"


def upload(client: Client, path: Path, note: Note = say) -> str:
    """Make sure the server holds the file's bytes; returns its digest."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from e
    with _progress(size) as progress:
        digest = _sha256(path, progress)
        if client.has_blob(digest):
            note(f"using existing blob {digest} for {path.name}")
            return digest
        task = progress.add_task(f"uploading {path.name}", total=size)
        client.upload_blob(digest, path, on_chunk=lambda n: progress.advance(task, n))
    note(f"uploaded {path.name} ({human_size(size)}) as {digest}")
    return digest


def _read_modelfile(path: Path) -> Modelfile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise CliError(f"{path} is not UTF-8 text") from e
    try:
        return parse_modelfile(text)
    except ModelfileError as e:
        raise CliError(f"{path}: {e}") from e


def _modelfile(args: argparse.Namespace) -> tuple[Modelfile, Path]:
    if args.base is not None and args.file is not None:
        raise CliError("give either --from BASE or -f MODELFILE, not both")
    if args.base is not None:
        return Modelfile(base=args.base), Path.cwd()
    path = Path(args.file) if args.file is not None else Path("Modelfile")
    if args.file is None and not path.is_file():
        raise CliError("give --from BASE or -f MODELFILE (there is no ./Modelfile)")
    return _read_modelfile(path), path.parent


def create_body(client: Client, name: str, mf: Modelfile, root: Path, note: Note = say) -> dict[str, Any]:
    """The `/api/create` request for a parsed Modelfile, uploading any local files it names."""
    body: dict[str, Any] = {"model": name, "stream": True}
    assert mf.base is not None
    try:
        base_file = local_file(mf.base, root)
        adapter_files = [local_file(a, root) for a in mf.adapters]
    except ModelfileError as e:
        raise CliError(str(e)) from e
    if base_file is not None:
        body["files"] = {base_file.name: upload(client, base_file, note)}
    else:
        body["from"] = mf.base
    adapters: dict[str, str] = {}
    for raw, path in zip(mf.adapters, adapter_files, strict=True):
        if path is None:
            raise CliError(f"ADAPTER {raw}: no such file")
        adapters[path.name] = upload(client, path, note)
    if adapters:
        body["adapters"] = adapters
    if mf.template is not None:
        body["template"] = mf.template
    if mf.system is not None:
        body["system"] = mf.system
    if mf.parameters:
        body["parameters"] = mf.parameters
    if mf.licenses:
        body["license"] = mf.licenses if len(mf.licenses) > 1 else mf.licenses[0]
    if mf.messages:
        body["messages"] = mf.messages
    return body


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_create(args: argparse.Namespace) -> int:
    name = model_name(args.model)
    mf, root = _modelfile(args)
    note = _to_stderr if args.json else say
    with Client(args.host, args.token) as client:
        body = create_body(client, args.model, mf, root, note)
        base = body.get("from")
        if isinstance(base, str):
            model_name(base)
        last = None
        for status in client.stream_ndjson("/api/create", body, model=base):
            text = str(status.get("status") or "")
            if text and text != last and not args.json:
                say(text)
            last = text
    if last != "success":
        raise CliError("the server ended the create stream without `success`")
    if args.json:
        print_json({"model": name.display_shortest(), "status": last})
    return 0
