"""The web UI's routes: Jinja2 pages rendered on the server, forms posted back with a CSRF token each.

A user of the core like any face: every page asks the core with the request's actor
(`auth.actor_of(request, "web")`), so what a user sees and may do is exactly what the APIs allow;
deletions go through the planner (previews included), restores through `core/trash.py`. Nothing
here decides who may delete what, nor what a delete frees.

Sign-in: an API token posted once becomes a session cookie (`core/sessions.py`; HttpOnly,
SameSite=Strict, Secure over TLS). Every form that changes something carries a CSRF token: an HMAC,
under the store's key, of the browser's CSRF cookie and its session, checked with the request's
Origin (only this server's own).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelhangar import auth
from modelhangar.core import browse, sessions, trash
from modelhangar.core.audit import list_audit
from modelhangar.core.config import format_duration, parse_duration
from modelhangar.core.errors import Conflict, Denied, HangarError, NotFound, Unavailable
from modelhangar.core.names import InvalidName, display_repository, parse_name
from modelhangar.core.planner import Plan, Planner, Target
from modelhangar.core.retention import RetentionPolicy, policy_from_config, prune
from modelhangar.core.store import Actor, Store
from modelhangar.core.usage import CATEGORIES, disk_usage
from modelhangar.web import words

HERE = Path(__file__).parent
SESSION_COOKIE = "hangar_session"
CSRF_COOKIE = "hangar_csrf"
PER_PAGE = 50
PAGE_SIZES = (25, 50, 100, 200)
FACES = ("web", "cli", "ollama", "hangar", "oci", "replicate", "opensearch", "schedule")
MAX_FIELDS = 1000

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(words.filters())


def model_url(name: str, sub: str = "") -> str:
    path = "/ui/models/" + quote(name, safe="/:@")
    return path + (f"/-/{sub}" if sub else "")


ENV.globals.update(model_url=model_url, quote=quote)

auth.allow_anonymous("/ui/signin", frozenset({"GET", "HEAD", "POST"}))
auth.allow_anonymous("/ui/static/", frozenset({"GET", "HEAD"}), prefix=True)
auth.SESSION_COOKIES.append(("/ui", SESSION_COOKIE, sessions.resolve))


class WebError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _actor(request: Request) -> Actor:
    return auth.actor_of(request, "web")


async def _key(request: Request) -> bytes:
    key: bytes | None = getattr(request.app.state, "web_csrf_key", None)
    if key is None:
        key = await run_in_threadpool(sessions.csrf_key, _store(request))
        request.app.state.web_csrf_key = key
    return key


def _token(key: bytes, csrf_cookie: str, session: str) -> str:
    return hmac.new(key, f"{csrf_cookie}|{session}".encode(), hashlib.sha256).hexdigest()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """A page, with the CSRF token its forms carry (and the CSRF cookie, set when the browser lacks it)."""
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    new = not cookie
    if new:
        cookie = secrets.token_urlsafe(24)
    key = await _key(request)
    actor: Actor | None = auth.maybe_actor(request)
    html = ENV.get_template(template).render(
        request_path=request.url.path,
        actor=actor,
        signed_in=bool(request.cookies.get(SESSION_COOKIE)) and actor is not None and actor.principal,
        csrf=_token(key, cookie, request.cookies.get(SESSION_COOKIE, "")),
        **ctx,
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if new:
        response.set_cookie(
            CSRF_COOKIE, cookie, httponly=True, samesite="strict", secure=_secure(request), path="/ui"
        )
    return response


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Every page: only this server's own assets (no CDN, no fonts from elsewhere), never framed."""


async def form(request: Request) -> dict[str, list[str]]:
    """A posted form, after its CSRF token and Origin check out (else 403)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
        raise WebError(403, "this form may only be sent from modelhangar's own pages")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise WebError(415, "send the form as application/x-www-form-urlencoded")
    try:
        fields = parse_qs(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            strict_parsing=False,
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise WebError(400, f"unreadable form: {e}") from e
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = (fields.get("csrf") or [""])[0]
    expected = _token(await _key(request), cookie, request.cookies.get(SESSION_COOKIE, ""))
    if not cookie or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise WebError(403, "the form's CSRF token is missing or wrong: reload the page and try again")
    return fields


def one(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[0] if values else default


Handler = Callable[[Request], Awaitable[Response]]


def page(fn: Handler) -> Handler:
    """Core errors and bad input as pages with the right status, never a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except WebError as e:
            return await render(request, "error.html", e.status, code=e.status, message=e.message)
        except NotFound as e:
            return await render(request, "error.html", 404, code=404, message=str(e))
        except Denied as e:
            return await render(request, "error.html", 403, code=403, message=str(e))
        except Conflict as e:
            return await render(request, "error.html", 409, code=409, message=str(e))
        except Unavailable:
            raise  # the server's 503 with Retry-After
        except (InvalidName, ValueError, HangarError) as e:
            return await render(request, "error.html", 400, code=400, message=str(e))

    return wrapped


def unauthorized(path: str, message: str) -> Response:
    """What a browser meets without a valid sign-in: the sign-in page, or (a session that does not
    check out: forged, ended, its token revoked) a 401 that drops the cookie."""
    if message.startswith("authentication required"):
        return RedirectResponse("/ui/signin?" + urlencode({"next": path}), status_code=303)
    from modelhangar.guards import error_response

    response = error_response(path, 401, message + " (sign in at /ui/signin)")
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


# ---------------------------------------------------------------------------------------------- sign in


@page
async def signin_page(request: Request) -> Response:
    return await render(request, "signin.html", next=_next(request.query_params.get("next", "")), error=None)


def _next(raw: str) -> str:
    return raw if raw.startswith("/ui/") and not raw.startswith("//") else "/ui/"


@page
async def signin(request: Request) -> Response:
    fields = await form(request)
    token = one(fields, "token").strip()
    secret = await run_in_threadpool(sessions.sign_in, _store(request), token) if token else None
    if secret is None:
        return await render(
            request,
            "signin.html",
            401,
            next=_next(one(fields, "next")),
            error="That token is not valid (revoked, expired or mistyped).",
        )
    response = RedirectResponse(_next(one(fields, "next")), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(sessions.SESSION_LIFETIME),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/ui",
    )
    return response


@page
async def signout(request: Request) -> Response:
    await form(request)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await run_in_threadpool(sessions.sign_out, _store(request), secret)
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


# ---------------------------------------------------------------------------------------------- models


@page
async def models(request: Request) -> Response:
    q = request.query_params
    text = q.get("q", "")[:200]
    sort = q.get("sort", "name")
    if sort not in browse.SORTS:
        raise WebError(400, f"sort by one of {', '.join(browse.SORTS)}")
    try:
        number = int(q.get("page", "1"))
    except ValueError:
        raise WebError(400, "page must be a number") from None
    if number < 1 or number > 10**7:
        raise WebError(400, "page must be 1 or more")
    per_page = int(q["per_page"]) if q.get("per_page", "").isdigit() else PER_PAGE
    if per_page not in PAGE_SIZES:
        raise WebError(400, f"per_page is one of {', '.join(map(str, PAGE_SIZES))}")
    result = await run_in_threadpool(
        browse.models_page,
        _store(request),
        _actor(request),
        text=text,
        sort=sort,
        page=number,  # type: ignore[arg-type]
        per_page=per_page,
    )

    def link(**change: Any) -> str:
        params = {"q": text, "sort": sort, "per_page": per_page, "page": number, **change}
        if params["per_page"] == PER_PAGE:
            del params["per_page"]
        return "/ui/?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

    return await render(
        request,
        "models.html",
        result=result,
        text=text,
        sort=sort,
        link=link,
        sorts=browse.SORTS,
        per_page=per_page,
        page_sizes=PAGE_SIZES,
    )


def _repository(name: str) -> str:
    try:
        return parse_name(name).repository
    except InvalidName as e:
        raise WebError(404, f'no model "{name}": {e.reason}') from e


@page
async def model_routes(request: Request) -> Response:
    """`/ui/models/<name>[/-/<what>]`: a model's page, its settings, a version, their deletes."""
    rest: str = request.path_params["rest"]
    name, _, sub = rest.partition("/-/")
    name = name.strip("/")
    repository = _repository(name)
    store, actor = _store(request), _actor(request)
    detail = await run_in_threadpool(browse.model_detail, store, actor, repository)
    if detail is None:
        raise WebError(404, f'model "{name}" not found')
    shown = detail.row.name
    parts = sub.split("/") if sub else []
    method = request.method
    if not parts and method == "GET":
        return await render(request, "model.html", m=detail)
    if parts == ["settings"] and method == "GET":
        return await render(request, "settings.html", m=detail)
    if parts == ["delete"]:
        target = Target("repository", detail.row.repository)
        return await _delete(
            request, [target], label=shown, confirm_word=shown, back=model_url(shown, "settings")
        )
    if len(parts) >= 2 and parts[0] == "versions":
        version = next((v for v in detail.versions if v.digest == parts[1]), None)
        if version is None:
            raise WebError(404, f"{shown} has no version {parts[1]}")
        if len(parts) == 2 and method == "GET":
            return await render(request, "version.html", m=detail, v=version)
        if parts[2:] == ["delete"]:
            label = f"{shown}@{words.short_digest(version.digest)}"
            target = Target("manifest", detail.row.repository, version.digest)
            return await _delete(
                request,
                [target],
                label=f"version {label} of {shown}",
                confirm_word=shown,
                back=model_url(shown, f"versions/{version.digest}"),
            )
    raise WebError(404 if method == "GET" else 405, "no such page")


async def _delete(
    request: Request,
    targets: list[Target],
    *,
    label: str,
    confirm_word: str,
    back: str,
    models: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    preview_on: tuple[str, ...] = ("GET",),
) -> Response:
    """GET: the preview and the confirmation form. POST: the delete, once the typed word matches.
    `models` go back in the form (the list's selection), `fields` is the form when already read."""
    store, actor = _store(request), _actor(request)
    planner = Planner(store)
    if request.method == "POST":
        fields = fields if fields is not None else await form(request)
        if one(fields, "confirm").strip() != confirm_word:
            plan = (await run_in_threadpool(planner.preview, [targets], actor))[0]
            return await _preview_page(
                request,
                plan,
                label,
                confirm_word,
                back,
                400,
                error=f'Type "{confirm_word}" exactly to confirm.',
                models=models,
            )
        plan = await run_in_threadpool(planner.delete, targets, actor)
        if plan.ok:
            return await render(
                request, "deleted.html", plan=plan, label=label, sentences=words.plan_sentences(plan, label)
            )
        return await _preview_page(
            request, plan, label, confirm_word, back, 409 if plan.blockers else 404, models=models
        )
    if request.method not in preview_on:
        raise WebError(405, "use GET for the preview, POST to delete")
    plan = (await run_in_threadpool(planner.preview, [targets], actor))[0]
    return await _preview_page(request, plan, label, confirm_word, back, 200, models=models)


async def _preview_page(
    request: Request,
    plan: Plan,
    label: str,
    confirm_word: str,
    back: str,
    status: int,
    error: str | None = None,
    models: list[str] | None = None,
) -> Response:
    blockers = [
        {"text": words.blocker_text(b.kind, b.id, b.reason), "link": _blocker_link(b.kind, b.id, plan)}
        for b in plan.blockers
    ]
    return await render(
        request,
        "delete.html",
        status,
        plan=plan,
        label=label,
        confirm_word=confirm_word,
        back=back,
        sentences=words.plan_sentences(plan, label),
        blockers=blockers,
        error=error,
        action=request.url.path,
        models=models or [],
    )


def _blocker_link(kind: str, ident: str, plan: Plan) -> str:
    """Where a person sees a blocker: the model it is about, at its dependents."""
    if kind == "permission":
        return model_url(display_repository(ident))
    first = plan.targets[0] if plan.targets else ""
    repo = first.split("@")[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return model_url(display_repository(repo)) + f"#dependent-{quote(kind)}-{quote(ident, safe='')}"


@page
async def bulk(request: Request) -> Response:
    """Several models from the list, one preview for the whole selection, deleted as one unit."""
    fields = await form(request) if request.method == "POST" else None
    names = fields.get("model", []) if fields is not None else request.query_params.getlist("model")
    names = list(dict.fromkeys(n for n in names if n))[:MAX_FIELDS]
    if not names:
        raise WebError(400, "select at least one model")
    targets = [Target("repository", _repository(n)) for n in names]
    label = names[0] if len(names) == 1 else f"{len(names)} models"
    return await _delete(
        request,
        targets,
        label=label,
        confirm_word=f"delete {len(names)}",
        back="/ui/",
        models=names,
        fields=fields,
        preview_on=("GET", "HEAD"),
    )


# ---------------------------------------------------------------------------------------------- trash


@page
async def trash_page(request: Request) -> Response:
    entries = await run_in_threadpool(trash.list_trash, _store(request), _actor(request))
    return await render(
        request,
        "trash.html",
        entries=entries,
        now=time.time(),
        message=request.query_params.get("message", "")[:300],
    )


@page
async def trash_restore(request: Request) -> Response:
    fields = await form(request)
    ident = one(fields, "id")
    if not ident.isdigit():
        raise WebError(400, "which trash entry? (an id)")
    as_raw = one(fields, "as").strip()
    as_name = parse_name(as_raw) if as_raw else None
    try:
        entry = await run_in_threadpool(trash.restore, _store(request), int(ident), _actor(request), as_name)
    except Conflict as e:
        raise WebError(409, f"{e}. Restore it under another name.") from e
    shown = (
        words.model(f"{entry.repository}:{entry.tag}") if entry.tag else display_repository(entry.repository)
    )
    return RedirectResponse("/ui/trash?" + urlencode({"message": f"Restored {shown}."}), status_code=303)


@page
async def trash_empty(request: Request) -> Response:
    store, actor = _store(request), _actor(request)
    if request.method == "POST":
        await form(request)
        plans = await run_in_threadpool(trash.empty_trash, store, actor)
        freed = sum(p.bytes_freed for p in plans if p.executed)
        n = sum(len(p.models) for p in plans if p.executed)
        message = f"Emptied the trash: {n} entries purged, {words.size(freed)} freed."
        return RedirectResponse("/ui/trash?" + urlencode({"message": message}), status_code=303)
    plans = await run_in_threadpool(lambda: trash.empty_trash(store, actor, dry_run=True))
    return await render(request, "empty.html", plans=plans)


# ---------------------------------------------------------------------------------------------- usage


@page
async def usage(request: Request) -> Response:
    store, actor = _store(request), _actor(request)
    result = await run_in_threadpool(lambda: disk_usage(store, with_sharers=False, actor=actor))
    biggest = sorted(result.models, key=lambda m: (-m.size, m.repository, m.tag))[:15]
    rows = [
        (
            words.model(f"{m.repository}:{m.tag}"),
            m.size,
            m.unique_size,
            model_url(display_repository(m.repository)),
        )
        for m in biggest
    ]
    return await render(
        request, "usage.html", usage=result, chart=words.bar_chart(rows), rows=rows, categories=CATEGORIES
    )


# ---------------------------------------------------------------------------------------------- retention


@page
async def retention(request: Request) -> Response:
    store, actor = _store(request), _actor(request)
    q = request.query_params
    values = {
        k: q.get(k, "").strip()[:200]
        for k in ("match", "older_than", "unused_for", "keep_last", "untagged_for")
    }
    configured = []
    for doc in store.settings.policies:
        configured.append({k: str(v) for k, v in doc.items()})
    results = None
    error = None
    if any(values[k] for k in ("older_than", "unused_for", "keep_last", "untagged_for")):
        try:
            policy = RetentionPolicy(
                match=values["match"] or "*",
                older_than=parse_duration(values["older_than"]) if values["older_than"] else None,
                unused_for=parse_duration(values["unused_for"]) if values["unused_for"] else None,
                keep_last=int(values["keep_last"]) if values["keep_last"] else None,
                untagged_for=parse_duration(values["untagged_for"]) if values["untagged_for"] else None,
            )
        except ValueError as e:
            error = str(e)
        else:
            results = await run_in_threadpool(lambda: prune(store, policy, actor, dry_run=True))
    elif q.get("policy", "").isdigit() and int(q["policy"]) < len(store.settings.policies):
        policy = policy_from_config(store.settings.policies[int(q["policy"])])
        results = await run_in_threadpool(lambda: prune(store, policy, actor, dry_run=True))
    freed = sum(r.plan.bytes_freed for r in results or [] if r.plan and r.ok)
    return await render(
        request,
        "retention.html",
        400 if error else 200,
        values=values,
        configured=configured,
        results=results,
        error=error,
        freed=freed,
        fmt=format_duration,
    )


# ---------------------------------------------------------------------------------------------- audit


@page
async def audit(request: Request) -> Response:
    q = request.query_params
    user = q.get("user", "").strip()[:255]
    face = q.get("face", "").strip()
    if face and face not in FACES:
        raise WebError(400, f"face is one of {', '.join(FACES)}")
    entries = await run_in_threadpool(
        lambda: list_audit(
            _store(request), limit=200, actor=_actor(request), face=face or None, by=user or None
        )
    )
    return await render(request, "audit.html", entries=entries, user=user, face=face, faces=FACES)


async def root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


def routes() -> list[BaseRoute]:
    return [
        Route("/ui", root, methods=["GET", "HEAD"]),
        Route("/ui/", models, methods=["GET", "HEAD"]),
        Route("/ui/models", models, methods=["GET", "HEAD"]),
        Route("/ui/signin", signin_page, methods=["GET", "HEAD"]),
        Route("/ui/signin", signin, methods=["POST"]),
        Route("/ui/signout", signout, methods=["POST"]),
        Route("/ui/models/{rest:path}", model_routes, methods=["GET", "HEAD", "POST"]),
        Route("/ui/bulk", bulk, methods=["GET", "HEAD", "POST"]),
        Route("/ui/trash", trash_page, methods=["GET", "HEAD"]),
        Route("/ui/trash/restore", trash_restore, methods=["POST"]),
        Route("/ui/trash/empty", trash_empty, methods=["GET", "HEAD", "POST"]),
        Route("/ui/usage", usage, methods=["GET", "HEAD"]),
        Route("/ui/retention", retention, methods=["GET", "HEAD"]),
        Route("/ui/audit", audit, methods=["GET", "HEAD"]),
        Mount("/ui/static", app=StaticFiles(directory=HERE / "static"), name="ui-static"),
    ]
