#!/usr/bin/env python3
"""Browser checks of synchost's embedded admin console (Playwright, sync API).

Drives Debian's chromium (no Playwright browser download) against a running
synchost admin endpoint.

Environment:
  SYNCHOST_URL    base URL of the admin endpoint, e.g. http://127.0.0.1:7979
  SYNCHOST_TOKEN  the admin bearer token (for `unauthorised`: the wrong token to
                  try; a made-up one when unset)
  SCREENSHOTS     directory for full-page PNGs (created if missing; default .)
  CHROMIUM        chromium executable (default /usr/bin/chromium)

Subcommands (each prints one line per check and exits 0 when all pass):
  overview --tenants a,b
  unauthorised
  approve --run N
  retry --tenant T --pipeline P
  rollback --tenant T --plugin NAME
  run --run N
"""
import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

TIMEOUT_MS = 60_000
expect.set_options(timeout=TIMEOUT_MS)

RUN_STATUSES = ["running", "succeeded", "succeeded with errors", "failed", "stopped",
                "blocked", "paused", "abandoned", "superseded"]


class CheckFailed(Exception):
    pass


def ok(message):
    print(f"ok: {message}", flush=True)


def env(name, default=None, required=False):
    value = os.environ.get(name, default)
    if required and not value:
        raise CheckFailed(f"environment variable {name} is not set")
    return value


def plural(n, one, many):
    return f"{n} {one if n == 1 else many}"


class Console:
    """One browser page on the console, with the checks every step shares."""

    def __init__(self, page, base, shots):
        self.page = page
        self.base = base.rstrip("/")
        self.shots = shots
        self.dialogs = []
        self.page_errors = []
        self.foreign = []
        origin = urlsplit(self.base)
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

        def request(req):
            u = urlsplit(req.url)
            if u.scheme in ("http", "https") and (u.scheme, u.netloc) != (origin.scheme, origin.netloc):
                self.foreign.append(req.url)
        page.on("request", request)

    def _dialog(self, dialog):
        self.dialogs.append((dialog.type, dialog.message))
        print(f"info: {dialog.type} dialog: {dialog.message!r} (accepted)", flush=True)
        dialog.accept()

    def url(self, route="/"):
        return f"{self.base}/#{route}"

    def shot(self, name):
        path = self.shots / name
        self.page.screenshot(path=str(path), full_page=True)
        ok(f"screenshot {path}")

    def sign_in(self, token, route="/"):
        """Opens the console at `route` and signs in through the form."""
        page = self.page
        page.goto(self.url(route))
        token_input = page.get_by_label("Admin token")
        expect(token_input).to_be_visible()
        expect(token_input).to_have_attribute("type", "password")
        expect(page.locator("#token-hint")).to_contain_text("token_file in synchost.toml")
        ok("sign-in form shows a labelled password input 'Admin token' and the token_file hint")
        token_input.fill(token)
        page.get_by_role("button", name="Sign in", exact=True).click()

    def expect_signed_in(self):
        page = self.page
        expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()
        expect(page.locator("#token")).to_have_count(0)
        expect(page.locator("#updated")).to_have_text(re.compile(r"^updated \d\d:\d\d:\d\d$"))
        ok("signed in: 'Sign out' shown, form gone, 'updated HH:MM:SS' shown")

    def finish(self):
        if self.page_errors:
            raise CheckFailed(f"uncaught JavaScript errors: {self.page_errors}")
        ok("no uncaught JavaScript errors")
        if self.foreign:
            raise CheckFailed(f"requests to other origins: {self.foreign}")
        ok("no requests to other origins")


# ---------- steps ----------

def step_overview(c, args, token):
    page = c.page
    names = [t.strip() for t in args.tenants.split(",") if t.strip()]
    if not names:
        raise CheckFailed("--tenants names no tenant")
    c.sign_in(token, "/")
    c.expect_signed_in()
    table = page.locator("#tenants")
    expect(table).to_be_visible()
    expect(table.locator("caption")).to_contain_text("Tenants")
    for name in names:
        cell = table.locator("tbody th[scope=row]").filter(has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))
        expect(cell.first, f"the overview should list tenant {name!r}").to_be_visible()
        ok(f"overview lists tenant {name!r}")
    c.shot("overview.png")

    # Keyboard: a fresh load (signed in through sessionStorage) puts the skip link first.
    page.reload()
    expect(page.locator("#tenants")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#skip"), "the first Tab should reach the skip link").to_be_focused()
    expect(page.locator("#skip")).to_have_text("Skip to main content")
    ok("the first Tab from the top focuses the skip link")
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    ok("the skip link moves focus to main")
    c.finish()


def step_unauthorised(c, args, token):
    page = c.page
    # SYNCHOST_TOKEN, when set, is the wrong token to try; otherwise a made-up one.
    c.sign_in(token or "wrong-token-" + os.urandom(4).hex(), "/")
    error = page.locator("#signin-error")
    expect(error, "a wrong token should produce an error on the form").to_have_text(re.compile(r"\S"))
    ok(f"the form shows an error: {error.inner_text()!r}")
    expect(page.get_by_label("Admin token")).to_be_visible()
    expect(page.locator("#tenants"), "no tenant data should appear with a wrong token").to_have_count(0)
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_hidden()
    stored = page.evaluate("() => sessionStorage.getItem('synchost-token')")
    if stored is not None:
        raise CheckFailed(f"the refused token is still stored: {stored!r}")
    ok("no tenant data shown, no Sign out button, refused token dropped")
    status = page.evaluate("async () => (await fetch('/api/v1/tenants')).status")
    if status != 401:
        raise CheckFailed(f"fetch('/api/v1/tenants') without a token got {status}, not 401")
    ok("fetch('/api/v1/tenants') without Authorization gets 401")
    body = page.evaluate("async () => (await fetch('/api/v1/tenants')).json()")
    if not isinstance(body, dict) or body.get("code") != "unauthorized":
        raise CheckFailed(f"401 body is not {{code: 'unauthorized', ...}}: {body!r}")
    ok("the 401 body has code 'unauthorized'")
    c.shot("unauthorised.png")
    c.finish()


def count_of(page, sel):
    text = page.locator(sel).inner_text().strip().replace(",", "")
    if not re.fullmatch(r"\d+", text):
        raise CheckFailed(f"{sel} shows {text!r}, not a count")
    return int(text)


def step_approve(c, args, token):
    page = c.page
    run = args.run
    c.sign_in(token, f"/plan/{run}")
    c.expect_signed_in()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Plan of run {run}")
    expect(page.locator("#plan-status"), f"run {run} should be blocked with a plan awaiting approval").to_have_text("blocked")
    ok(f"plan of run {run} is shown and blocked")
    button = page.locator("#approve")
    expect(button, "the plan page should offer an Approve button (#approve)").to_be_visible()
    creates = count_of(page, "#count-creates")
    updates = count_of(page, "#count-updates")
    deletes = count_of(page, "#count-deletes")
    want = f"Approve: {plural(creates, 'create', 'creates')}, {plural(updates, 'update', 'updates')}, {plural(deletes, 'delete', 'deletes')}"
    text = button.inner_text().strip()
    if not text.startswith("Approve:"):
        raise CheckFailed(f"approve button says {text!r}, not 'Approve: ...'")
    if text != want:
        raise CheckFailed(f"approve button says {text!r}; the counts shown mean {want!r}")
    ok(f"approve button names the counts shown: {text!r}")
    for caption in ("Creates", "Updates", "Deletes", "Held conflicts"):
        expect(page.locator("table caption").filter(has_text=re.compile(rf"^{caption}"))).to_have_count(1)
    ok("samples: Creates, Updates, Deletes and Held conflicts tables")
    c.shot("plan.png")

    before = len(c.dialogs)
    button.click()
    status = page.locator("#status")
    expect(status, "the status region should report that the approved run succeeded").to_contain_text("succeeded", timeout=TIMEOUT_MS)
    if len(c.dialogs) == before or c.dialogs[-1][0] != "confirm":
        raise CheckFailed("approving did not ask for confirmation first")
    ok("approving asked for confirmation")
    ok(f"status region: {status.inner_text().strip()!r}")
    expect(status.get_by_role("link", name=re.compile(r"^View run \d+$"))).to_be_visible()
    ok("status region links to the run")
    expect(page.locator("#approve")).to_have_count(0)
    expect(page.locator("#not-approvable")).to_contain_text("cannot be approved")
    ok("the plan no longer offers approval")
    c.shot("approved.png")
    c.finish()


def step_retry(c, args, token):
    page = c.page
    route = f"/pipeline/{quote(args.tenant, safe='')}/{quote(args.pipeline, safe='')}"
    c.sign_in(token, route)
    c.expect_signed_in()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Pipeline {args.tenant}/{args.pipeline}")
    expect(page.locator("#pipeline-facts")).to_be_visible()
    ok("pipeline page shows its details")
    rows = page.locator("#dead-letters tbody tr")
    expect(rows.first, "the pipeline should list at least one dead letter").to_be_visible()
    ok(f"dead letters listed: {rows.count()}")
    c.shot("pipeline.png")

    first = rows.first
    letter = first.get_attribute("data-id")
    if not letter or not letter.isdigit():
        raise CheckFailed(f"first dead-letter row has no numeric data-id ({letter!r})")
    button = page.get_by_role("button", name=f"Retry dead letter {letter}", exact=True)
    expect(button).to_be_visible()
    expect(page.get_by_role("button", name=f"Drop dead letter {letter}", exact=True)).to_be_visible()
    button.click()
    ok(f"clicked Retry on dead letter {letter}")
    page.wait_for_function(
        r"""(id) => {
            const gone = !document.querySelector('#dead-letters tbody tr[data-id="' + id + '"]');
            const said = new RegExp('Requeued \\d+ dead letters?: ([\\d, ]*, )?' + id + '\\b')
                .test(document.getElementById('status').textContent);
            return gone || said;
        }""",
        arg=letter, timeout=TIMEOUT_MS)
    ok(f"dead letter {letter} requeued: {page.locator('#status').inner_text().strip()!r}")
    c.shot("dead-letters.png")
    c.finish()


def step_rollback(c, args, token):
    page = c.page
    c.sign_in(token, f"/tenant/{quote(args.tenant, safe='')}/plugins")
    c.expect_signed_in()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Plugins of tenant {args.tenant}")
    expect(page.get_by_role("heading", level=2, name=args.plugin, exact=True)).to_be_visible()
    button = page.get_by_role("button", name=f"Roll back {args.plugin}", exact=True)
    expect(button, f"'Roll back {args.plugin}' should be enabled (more than one version kept)").to_be_enabled()
    ok(f"'Roll back {args.plugin}' is enabled")
    before = len(c.dialogs)
    button.click()
    status = page.locator("#status")
    expect(status, "the status region should report the tenant change 'swapped'").to_contain_text("swapped", timeout=TIMEOUT_MS)
    if len(c.dialogs) == before or c.dialogs[-1][0] != "confirm":
        raise CheckFailed("rolling back did not ask for confirmation first")
    ok("rolling back asked for confirmation")
    ok(f"status region: {status.inner_text().strip()!r}")
    c.shot("plugins.png")
    c.finish()


def step_run(c, args, token):
    page = c.page
    run = args.run
    c.sign_in(token, f"/run/{run}")
    c.expect_signed_in()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Run {run}")
    expect(page.locator("#run-id"), f"the run page should show run id {run}").to_have_text(str(run))
    ok(f"run id {run} shown")
    status = page.locator("#run-status")
    expect(status).to_have_text(re.compile("^(" + "|".join(RUN_STATUSES) + ")$"))
    ok(f"run status shown: {status.inner_text().strip()!r}")
    expect(page.locator("#run-stats")).to_be_visible()
    ok("stats shown")
    c.shot("run.png")
    c.finish()


def step_reconcile(c, args, token):
    page = c.page
    route = f"/pipeline/{quote(args.tenant, safe='')}/{quote(args.pipeline, safe='')}"
    c.sign_in(token, route)
    c.expect_signed_in()
    button = page.get_by_role("button", name="Reconcile now", exact=True)
    expect(button, "an event pipeline's page should offer 'Reconcile now'").to_be_visible()
    button.click()
    expect(page.locator("#status")).to_contain_text(
        f"Reconciliation of {args.tenant}/{args.pipeline} queued.", timeout=TIMEOUT_MS)
    ok("clicked 'Reconcile now': queued")
    # The reconciliation runs in the daemon; its outcome shows once it ended.
    last = page.locator("#last-reconcile")
    for _ in range(TIMEOUT_MS // 500):
        if last.count() and "missing" in last.inner_text():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(last).to_contain_text("missing", timeout=TIMEOUT_MS)
    ok(f"last reconciliation shown: {last.inner_text().strip()!r}")
    last.get_by_role("link").first.click()
    expect(page.locator("#run-drift")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#drift-found")).to_contain_text(f"{args.missing} missing")
    ok(f"the run's drift: {page.locator('#drift-found').inner_text().strip()!r}")
    c.shot("reconcile.png")
    c.finish()


STEPS = {
    "overview": step_overview,
    "unauthorised": step_unauthorised,
    "approve": step_approve,
    "retry": step_retry,
    "rollback": step_rollback,
    "run": step_run,
    "reconcile": step_reconcile,
}


def main(argv):
    parser = argparse.ArgumentParser(description="Browser checks of the synchost admin console.")
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("overview").add_argument("--tenants", required=True, help="comma-separated tenant names")
    sub.add_parser("unauthorised")
    sub.add_parser("approve").add_argument("--run", type=int, required=True)
    p = sub.add_parser("retry")
    p.add_argument("--tenant", required=True)
    p.add_argument("--pipeline", required=True)
    p = sub.add_parser("rollback")
    p.add_argument("--tenant", required=True)
    p.add_argument("--plugin", required=True)
    sub.add_parser("run").add_argument("--run", type=int, required=True)
    p = sub.add_parser("reconcile")
    p.add_argument("--tenant", required=True)
    p.add_argument("--pipeline", required=True)
    p.add_argument("--missing", type=int, required=True, help="the keys the reconciliation should find missing")
    args = parser.parse_args(argv)

    try:
        base = env("SYNCHOST_URL", required=True)
        token = env("SYNCHOST_TOKEN", required=args.step != "unauthorised")
        shots = Path(env("SCREENSHOTS", "."))
        shots.mkdir(parents=True, exist_ok=True)
        chromium = env("CHROMIUM", "/usr/bin/chromium")
        if not Path(chromium).exists():
            raise CheckFailed(f"no chromium at {chromium} (set CHROMIUM)")
    except CheckFailed as e:
        print(f"FAIL {args.step}: {e}", file=sys.stderr, flush=True)
        return 2

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            console = Console(page, base, shots)
            try:
                STEPS[args.step](console, args, token)
            except (AssertionError, CheckFailed, PlaywrightError) as e:
                message = str(e).strip() or type(e).__name__
                print(f"FAIL {args.step}: {message}", file=sys.stderr, flush=True)
                try:
                    alert = page.locator("#alert").inner_text(timeout=2_000).strip()
                    if alert:
                        print(f"info: the console's alert region says: {alert!r}", file=sys.stderr, flush=True)
                except PlaywrightError:
                    pass
                try:
                    path = shots / f"{args.step}-failure.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(f"info: failure screenshot {path}", file=sys.stderr, flush=True)
                except PlaywrightError:
                    pass
                return 1
        finally:
            browser.close()
    print(f"PASS {args.step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
