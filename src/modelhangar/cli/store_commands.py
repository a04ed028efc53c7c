"""Commands that open the data directory in-process (safe beside a running server): gc, fsck,
import-ollama and export-ollama (`serve` is in `serve_command.py`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelhangar.cli.errors import CliError
from modelhangar.cli.output import console, human_size, plural, print_json, say, warn
from modelhangar.cli.settings import settings_from_env
from modelhangar.cli.wording import model_name, shown
from modelhangar.core.config import Settings
from modelhangar.core.errors import HangarError, model_not_found

if TYPE_CHECKING:  # the store pulls in SQLAlchemy and Alembic: imported only by commands that open it
    from modelhangar.core.store import Actor, Store


def _actor() -> Actor:
    from modelhangar.core.store import Actor

    return Actor(name="local", face="cli", admin=True)


@contextlib.contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    """The store at settings.home; catalog and file-system failures become one-line errors."""
    import sqlalchemy as sa

    from modelhangar.core.blob_location import BlobLocationMismatch, StoreBusy
    from modelhangar.core.s3blobs import BlobStoreConfigError
    from modelhangar.core.store import Store

    try:
        store = Store(settings)
    except (BlobStoreConfigError, BlobLocationMismatch, StoreBusy) as e:
        raise CliError(str(e)) from None
    except (OSError, sa.exc.SQLAlchemyError) as e:
        raise CliError(f"cannot open the store at {settings.home}: {_reason(e)}") from e
    try:
        yield store
    except sa.exc.SQLAlchemyError as e:
        raise CliError(f"catalog error: {_reason(e)}") from e
    except OSError as e:
        raise CliError(f"{e.filename or settings.home}: {e.strerror or e}") from e
    finally:
        store.close()


_GIVE_HOME = "give the data directory with --data-dir or HANGAR_HOME"


def existing_store(settings: Settings) -> Settings:
    """`settings`, if a store is there: a data directory holding the SQLite catalog file (or, with
    a PostgreSQL catalog, the data directory itself). Checked so that gc and fsck never create one."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        catalog = Path(url.database or ":memory:")
        if not catalog.is_file():
            raise CliError(f"no store at {settings.home}: {catalog} does not exist ({_GIVE_HOME})")
    elif not settings.home.is_dir():
        raise CliError(f"no store at {settings.home}: no such directory ({_GIVE_HOME})")
    return settings


def _reason(e: BaseException) -> str:
    import sqlalchemy as sa

    if isinstance(e, sa.exc.DBAPIError) and e.orig is not None:
        return str(e.orig).splitlines()[0]
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return (str(e).splitlines() or [type(e).__name__])[0]


# ---------------------------------------------------------------------------------------------- gc, fsck


def gc_summary(report: Any) -> list[str]:
    """Lines saying what a GC report reclaimed (or would)."""
    verb = "would reclaim" if report.dry_run else "reclaimed"
    lines = [f"{verb} {plural(len(report.blobs), 'blob')}, {human_size(report.bytes_freed)}"]
    if report.expired_trash:
        lines.append(f"expired from the trash: {', '.join(report.expired_trash)}")
    if report.finished:
        lines.append(f"finished {plural(len(report.finished), 'interrupted deletion')}")
    if report.orphan_files:
        lines.append(f"removed {plural(len(report.orphan_files), 'blob file')} the catalog did not know")
    if report.strays:
        lines.append(f"removed {plural(len(report.strays), 'stale temporary file')}")
    return lines


def cmd_gc(args: argparse.Namespace) -> int:
    from modelhangar.core import gc

    settings = existing_store(settings_from_env(args.data_dir))
    if args.grace is not None:
        settings = replace(settings, gc_grace=args.grace)
    with open_store(settings) as store:
        report = gc.collect(store, dry_run=args.dry_run, actor=_actor())
    if args.json:
        print_json(report.to_dict())
    else:
        for line in gc_summary(report):
            say(line)
    return 0


def _counts(store: Store) -> tuple[int, int]:
    import sqlalchemy as sa

    from modelhangar.core.catalog import schema as t

    with store.catalog.read() as conn:
        blobs = conn.execute(sa.select(sa.func.count()).select_from(t.blobs)).scalar_one()
        manifests = conn.execute(sa.select(sa.func.count()).select_from(t.manifests)).scalar_one()
    return int(blobs), int(manifests)


def cmd_fsck(args: argparse.Namespace) -> int:
    from modelhangar.core import gc

    with (
        open_store(existing_store(settings_from_env(args.data_dir))) as store,
        _byte_bar("verifying", args.json or not args.verify) as tick,
    ):
        problems = gc.fsck(store, verify=args.verify, progress=lambda done, total: tick("", done, total))
        blobs, manifests = _counts(store)
    if args.json:
        print_json(
            {
                "ok": not problems,
                "blobs": blobs,
                "manifests": manifests,
                "verified": args.verify,
                "problems": [{"kind": p.kind, "subject": p.subject, "detail": p.detail} for p in problems],
            }
        )
    elif problems:
        for p in problems:
            say(f"{p.kind}: {p.subject}: {p.detail}")
        say(f"{plural(len(problems), 'problem')} in {blobs} blobs, {manifests} manifests")
    else:
        hashed = " (contents hashed)" if args.verify else ""
        say(f"ok: {plural(blobs, 'blob')}, {plural(manifests, 'manifest')} checked{hashed}")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------- ollama layout


def default_ollama_dir() -> Path:
    """Where Ollama keeps models: $OLLAMA_MODELS, else ~/.ollama/models."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def _report_lines(verb: str, report: Any, asked: list[str] | None = None) -> None:
    for name in report.models:
        say(f"{verb} {name}")
    for skip in report.skipped:
        if skip.reason == "not found" and skip.subject in (asked or []):
            warn(model_not_found(shown(skip.subject)))
        else:
            warn(f"skipped {skip.subject}: {skip.reason}")


@contextlib.contextmanager
def _byte_bar(verb: str, quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar in bytes on stderr (a terminal only, and not with --json); yields the
    `progress(model, bytes_done, bytes_total)` callback of `core.ollama_layout`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

    bar = Progress(
        TextColumn(verb),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TextColumn("{task.description}"),
        console=console(stderr=True),
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
    )
    with bar:
        tasks: list[TaskID] = []  # added at the first call, when the total is known

        def tick(model: str, done: int, total: int) -> None:
            if not tasks:
                tasks.append(bar.add_task(model, total=total))
            bar.update(tasks[0], description=model, completed=done, total=total)

        yield tick


def cmd_import_ollama(args: argparse.Namespace) -> int:
    from modelhangar.core.ollama_layout import import_ollama

    src = Path(args.dir).expanduser() if args.dir else default_ollama_dir()
    if not src.is_dir():
        raise CliError(f"{src}: not a directory (give Ollama's models directory, e.g. ~/.ollama/models)")
    with open_store(settings_from_env(args.data_dir)) as store, _byte_bar("importing", args.json) as tick:
        try:
            report = import_ollama(store, src, progress=tick, overwrite=args.overwrite, actor=_actor())
        except HangarError as e:
            raise CliError(str(e)) from e
    if args.json:
        print_json(report.to_dict())
    else:
        _report_lines("imported", report)
        for kept in report.kept:
            warn(f"kept {kept.subject}: {kept.reason}")
        say(
            f"imported {plural(len(report.models), 'model')} from {src}: "
            f"{report.blobs_linked} blobs linked, {report.blobs_copied} copied, "
            f"{report.blobs_present} already present ({human_size(report.bytes)} new)"
        )
    failed = [s for s in report.skipped if str(s.subject).startswith("manifests/")]
    return 1 if failed else 0


def cmd_export_ollama(args: argparse.Namespace) -> int:
    from modelhangar.core.ollama_layout import export_ollama

    dest = Path(args.dir).expanduser()
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest}: not a directory")
    for m in args.models:
        model_name(m)
    settings = existing_store(settings_from_env(args.data_dir))
    with open_store(settings) as store, _byte_bar("exporting", args.json) as tick:
        try:
            report = export_ollama(store, dest, models=args.models or None, progress=tick)
        except HangarError as e:
            raise CliError(str(e)) from e
    if args.json:
        print_json(report.to_dict())
    else:
        _report_lines("exported", report, args.models)
        say(
            f"exported {plural(len(report.models), 'model')} to {dest}: "
            f"{report.blobs_linked} blobs linked, {report.blobs_copied} copied, "
            f"{report.blobs_existing} already there ({human_size(report.bytes)} written)"
        )
    return 1 if args.models and report.skipped else 0


# ---------------------------------------------------------------------------------------------- migrate-blobs


@contextlib.contextmanager
def _migration_progress(quiet: bool) -> Iterator[Callable[[Any], None]]:
    """A bar in bytes and objects on a terminal; else one plain line per object on stderr (nothing
    with --json). Yields the progress callback of `core.blob_migration`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

    tty = sys.stderr.isatty()
    bar = Progress(
        TextColumn("moving"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TextColumn("{task.fields[objects]}"),
        console=console(stderr=True),
        transient=True,
        disable=quiet or not tty,
    )
    words = {
        "copied": "copied",
        "recopied": "copied again (the copy there was wrong)",
        "present": "already there",
    }
    with bar:
        tasks: list[TaskID] = []

        def tick(p: Any) -> None:
            objects = f"{p.objects_done}/{p.objects} blobs"
            if not tasks:
                tasks.append(bar.add_task("", total=p.bytes, objects=objects))
            bar.update(tasks[0], completed=p.bytes_done, total=p.bytes, objects=objects)
            if not quiet and not tty and p.last and p.objects_done:
                what = words.get(p.last, "failed")
                print(
                    f"{what} {p.last_digest} ({human_size(p.last_size)}): {objects}, "
                    f"{human_size(p.bytes_done)} of {human_size(p.bytes)}",
                    file=sys.stderr,
                    flush=True,
                )

        yield tick


def cmd_migrate_blobs(args: argparse.Namespace) -> int:
    from modelhangar.core import blob_location
    from modelhangar.core.blob_migration import MigrationError, migrate
    from modelhangar.core.s3blobs import BlobStoreConfigError, BlobStoreUnavailable

    settings = existing_store(settings_from_env(args.data_dir))
    try:
        to = blob_location.normalize(args.to, settings.home)
    except ValueError as e:
        raise CliError(str(e)) from None
    if to.startswith("file:") and Path(to[5:]).exists() and not Path(to[5:]).is_dir():
        raise CliError(f"{to[5:]}: not a directory")
    import sqlalchemy as sa

    with _migration_progress(args.json) as tick:
        try:
            report = migrate(
                settings,
                to,
                delete_source=args.delete_source,
                allow_unknown=args.allow_unknown,
                jobs=args.jobs,
                progress=tick,
                actor=_actor(),
            )
        except (
            MigrationError,
            blob_location.BlobLocationMismatch,
            blob_location.StoreBusy,
            BlobStoreUnavailable,
        ) as e:
            raise CliError(str(e)) from None
        except BlobStoreConfigError as e:  # says HANGAR_BLOBS=...: the destination is --to here
            message = str(e)
            if to and message.startswith(f"HANGAR_BLOBS={to}"):
                message = f"--to {message.removeprefix('HANGAR_BLOBS=')}"
            raise CliError(message) from None
        except sa.exc.SQLAlchemyError as e:
            raise CliError(f"catalog error: {_reason(e)}") from e
        except OSError as e:
            raise CliError(f"{e.filename or settings.home}: {e.strerror or e}") from e
    if args.json:
        print_json(report.to_dict())
        return 1 if report.failed else 0
    for line in _migration_summary(report, settings.home, args.delete_source):
        say(line)
    return 1 if report.failed else 0


def _migration_summary(report: Any, home: Path, delete_source: bool) -> list[str]:
    from modelhangar.core.blob_location import describe

    for f in report.failed:
        warn(f"{f['digest']}: {f['reason']}")
    where, old = describe(report.destination, home), describe(report.source, home)
    lines = []
    if report.already_switched:
        lines.append(
            f"the store's blobs were moved to {where} already: start every process with {report.setting}"
        )
    else:
        took = f"{report.seconds:.1f}s" + (f", {human_size(report.rate)}/s" if report.copied_bytes else "")
        again = f"; {len(report.recopied)} copied again (the copy there was wrong)" if report.recopied else ""
        lines.append(
            f"{plural(report.blobs, 'blob')} ({human_size(report.bytes)}) verified in {where}: "
            f"{len(report.copied)} copied ({human_size(report.copied_bytes)} in {took}), "
            f"{len(report.present)} already there{again}"
        )
    if report.switched:
        lines.append(
            f"the store now keeps its blobs in {where}: start every server and command with {report.setting}"
        )
        if report.uploads_cancelled:
            n = plural(len(report.uploads_cancelled), "unfinished upload session")
            lines.append(f"{n} ended (clients start them again)")
    elif report.failed and not report.already_switched:
        lines.append(
            "nothing switched: the store uses its blobs where they were; fix the above and run it again"
        )
    if report.source_deleted or delete_source:
        size = human_size(report.source_deleted_bytes)
        lines.append(f"deleted {plural(len(report.source_deleted), 'blob')} ({size}) from {old}")
    elif report.switched:
        lines.append(f"{old}: the old copies are kept (--delete-source removes them; safe to run again)")
    return lines
