"""The web UI in a real browser (Debian's chromium driven by Playwright) against a real server."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from seed import Seeded, make_users, seed, store_of

from harness import ServerProcess
from modelhangar.core import dependents

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".webui-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Seeded]]:
    base = tmp_path_factory.mktemp("webui")
    home = base / "home"
    alice, bob = make_users(home)
    srv = ServerProcess(home, env={"HANGAR_TRASH_RETENTION": "24h"}, log_dir=base).start()
    try:
        yield srv, seed(srv.url, home, base, alice, bob)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def sign_in(browser: Any, url: str, token: str, **kw: Any) -> Any:
    page = browser.new_page(**kw)
    page.goto(url + "/ui/signin")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/ui/")
    return page


def test_sign_in_browse_filter_and_shared_layers(world: Any, browser: Any) -> None:
    srv, s = world
    page = sign_in(browser, srv.url, s.alice_token)
    assert "Signed in as alice" in page.inner_text("header")
    names = page.locator("table.models tbody th a").all_inner_texts()
    assert "alice/base" in names and "bob/tool" in names  # her own, and bob's public one
    page.get_by_label("Filter by name").fill("alice")
    page.get_by_role("button", name="Apply").click()
    shown = set(page.locator("table.models tbody th a").all_inner_texts())
    assert shown == {"alice/base", "alice/chat", "alice/notes"}
    page.get_by_role("link", name="alice/chat").click()
    assert page.get_by_role("heading", level=1).inner_text() == "alice/chat"
    assert page.locator("td.shared a", has_text="alice/base").count() >= 1
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/ui/signin$"))
    page.close()


def test_delete_through_settings_see_it_in_the_trash_and_restore(world: Any, browser: Any) -> None:
    srv, s = world
    page = sign_in(browser, srv.url, s.alice_token)
    page.goto(srv.url + "/ui/models/alice/notes")
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Delete model…").click()
    assert re.search(r"Deleting alice/notes frees \d", page.inner_text("section.preview"))
    button = page.get_by_role("button", name="Delete alice/notes")
    assert button.is_disabled()
    page.get_by_label("To confirm, type").fill("alice/notes")
    button.click()
    assert "Deleted alice/notes" in page.inner_text("h1")
    page.get_by_role("link", name="See it in the trash").click()
    row = page.locator("table.trash tbody tr", has_text="alice/notes")
    assert "23 hours" in row.inner_text()
    row.get_by_role("button", name="Restore alice/notes:latest").click()
    assert "Restored alice/notes:latest" in page.inner_text("main")
    page.goto(srv.url + "/ui/?q=notes")
    assert page.locator("table.models tbody th a").all_inner_texts() == ["alice/notes"]
    page.close()


def test_another_user_s_model_is_refused(world: Any, browser: Any) -> None:
    srv, s = world
    page = sign_in(browser, srv.url, s.alice_token)
    page.goto(srv.url + "/ui/models/bob/tool/-/delete")
    text = page.inner_text("section.preview")
    assert "cannot be deleted" in text and "You may not delete bob/tool" in text
    assert page.locator("form.confirm").count() == 0
    page.close()


def test_a_version_blocked_by_a_deployment(world: Any, browser: Any) -> None:
    srv, s = world
    store = store_of(srv.home)
    try:
        with store.catalog.write() as conn:
            dependents.record(
                conn,
                "deployment",
                "alice/chat-prod",
                "manifest",
                s.chat_version,
                reason="serves this version",
                owner="alice",
            )
    finally:
        store.close()
    page = sign_in(browser, srv.url, s.alice_token)
    page.goto(f"{srv.url}/ui/models/alice/chat/-/versions/{s.chat_version}")
    assert "deployment alice/chat-prod" in page.inner_text("#main")
    page.get_by_role("link", name="Delete version…").click()
    blockers = page.locator("ul.blockers li")
    assert blockers.count() == 1
    assert "deployment alice/chat-prod: serves this version" in blockers.inner_text()
    store = store_of(srv.home)
    try:
        with store.catalog.write() as conn:
            dependents.forget(conn, "deployment", "alice/chat-prod")
    finally:
        store.close()
    page.reload()
    page.get_by_label("To confirm, type").fill("alice/chat")
    page.get_by_role("button", name=re.compile("Delete version")).click()
    assert "Deleted version" in page.inner_text("h1")
    page.close()


def test_csrf_and_forged_cookies_are_refused(world: Any) -> None:
    srv, s = world
    with httpx.Client(base_url=srv.url) as c:
        r = c.post("/ui/signin", data={"token": s.bob_token})
        assert r.status_code == 403 and "CSRF" in r.text
        r = c.get("/ui/", headers={"Cookie": "hangar_session=forged"})
        assert r.status_code == 401
        r = c.post("/ui/trash/empty", data={"csrf": "0" * 64}, headers={"Cookie": "hangar_csrf=x"})
        assert r.status_code == 403
        r = c.post("/ui/trash/empty", data={}, headers={"Origin": "http://localhost:9999"})
        assert r.status_code == 403


def test_pages_next_previous_and_page_size(world: Any, browser: Any) -> None:
    srv, _ = world
    page = browser.new_page()  # a browser on loopback: the local admin (HANGAR_AUTH=local)
    page.goto(srv.url + "/ui/models?sort=name")
    names = page.locator("table.models tbody th a")
    assert names.count() == 50
    page.get_by_label("Per page").select_option("25")
    page.get_by_role("button", name="Apply").click()
    assert names.count() == 25
    summary = page.inner_text("#count")
    total = int(summary.split()[0])
    assert f"page 1 of {-(-total // 25)}" in summary
    first = names.all_inner_texts()
    page.get_by_role("link", name="Next").click()
    assert "page 2 of" in page.inner_text("#count")
    second = names.all_inner_texts()
    assert len(second) == 25 and not set(first) & set(second)
    assert sorted(first + second) == first + second  # by name, across the pages
    page.get_by_role("link", name="Previous").click()
    assert names.all_inner_texts() == first and "page 1 of" in page.inner_text("#count")
    page.close()


def test_bulk_delete_with_one_preview_then_the_trash_and_emptying_it(world: Any, browser: Any) -> None:
    srv, _ = world
    chosen = ["scratch-000", "scratch-001", "scratch-002"]
    page = browser.new_page()
    page.goto(srv.url + "/ui/models?q=scratch-00")
    for name in chosen:
        page.get_by_label(f"Select {name}", exact=True).check()
    page.get_by_role("button", name="Delete selected…").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Delete 3 models"
    assert page.locator("section.preview").count() == 1  # one preview for the whole selection
    assert re.search(r"Deleting 3 models frees \d", page.inner_text("section.preview"))
    page.locator("section.preview summary").click()
    listed = page.locator("section.preview details li").all_inner_texts()
    assert sorted(listed) == [f"{n}:latest" for n in chosen]
    page.get_by_label("To confirm, type").fill("delete 3")
    page.get_by_role("button", name="Delete 3 models").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Deleted 3 models"
    page.goto(srv.url + "/ui/models?q=scratch-00")
    left = page.locator("table.models tbody th a").all_inner_texts()
    assert not set(chosen) & set(left) and len(left) == 7
    page.get_by_role("link", name="Trash").click()
    trashed = page.locator("table.trash tbody th").all_inner_texts()
    assert {f"{n}:latest" for n in chosen} <= set(trashed)
    page.get_by_role("link", name="Empty the trash…").click()
    preview = page.inner_text("section.preview")
    assert re.search(rf"purges {len(trashed)} entries and frees \d", preview)
    page.get_by_role("button", name="Empty the trash").click()
    assert f"Emptied the trash: {len(trashed)} entries purged" in page.inner_text("main")
    assert "The trash is empty." in page.inner_text("main")
    page.close()


def test_retention_dry_run_previews_and_changes_nothing(world: Any, browser: Any) -> None:
    srv, _ = world
    page = browser.new_page()
    page.goto(srv.url + "/ui/retention")
    page.get_by_label("Names matching").fill("scratch-01*")
    page.get_by_label("Keep the newest … tags").fill("0")
    page.get_by_role("button", name="Preview").click()
    assert "10 models, freeing" in page.inner_text("p.summary")
    items = page.locator("main ul li", has_text="scratch-01").all_inner_texts()
    assert len(items) == 10 and all(": frees " in x for x in items)
    page.goto(srv.url + "/ui/models?q=scratch-01")
    assert page.locator("table.models tbody th a").count() == 10  # a dry run: all still there
    page.close()


def test_accessible_and_screenshots(world: Any, browser: Any) -> None:
    from axe_playwright_python import sync_playwright as axe_mod

    axe_js = (Path(axe_mod.__file__).parent / "axe.min.js").read_text()
    srv, s = world
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir()
    pages = {
        "models": "/ui/",
        "model": "/ui/models/alice/chat",
        "delete": "/ui/models/alice/base/-/delete",
        "trash": "/ui/trash",
        "usage": "/ui/usage",
        "audit": "/ui/audit",
        "signin": "/ui/signin",
        "bulk": "/ui/bulk?model=alice/base&model=alice/notes",
        "empty": "/ui/trash/empty",
        "retention": "/ui/retention?match=alice/*&keep_last=0",
    }
    problems = []
    for width, height, label in ((1280, 800, "laptop"), (390, 844, "phone")):
        for scheme in ("light", "dark"):
            page = sign_in(
                browser,
                srv.url,
                s.alice_token,
                viewport={"width": width, "height": height},
                color_scheme=scheme,
                bypass_csp=True,
            )  # only to inject axe
            for name, path in pages.items():
                page.goto(srv.url + path)
                page.screenshot(path=str(ARTIFACTS / f"{name}-{label}-{scheme}.png"), full_page=True)
                page.add_script_tag(content=axe_js)
                result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
                problems += [f"{name} {label} {scheme}: {v['id']}: {v['help']}" for v in result["violations"]]
            page.close()
    assert not problems, "\n".join(problems)
