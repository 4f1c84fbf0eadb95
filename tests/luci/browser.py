#!/usr/bin/env python3
"""Drives luci-app-connmark-lb in headless Chromium (Playwright from PyPI, Debian's chromium).

  browser.py SPEC.json

SPEC (written by tests/it/luci.rs, which built the router and started the real uhttpd, rpcd,
procd and connmark-lb daemon) holds:
  url        LuCI's base URL (http://127.0.0.1:PORT)
  password   root's LuCI password
  shots      directory for one screenshot per page
  pages      menu paths (admin/network/connmark-lb/...) to open
  weight     {"section": NAME, "value": N}: set on the Interfaces page, then Save & Apply
  ruleset    argv printing the router's nft table of connmark-lb
  status     argv printing `ubus call connmark-lb status`
  drop       argv making one ISP drop everything; down_link: that link's interface section
  validation {"globals": [[OPTION, VALUE], ...], "interface": [...], "rule": [...],
             "rule_section": NAME}: values typed into the Global settings form and into the
             Edit dialogs of interface `weight.section` and of rule `rule_section`;
             reports which ones the form marks invalid (the caller asks the binary)
  check      argv printing `connmark-lb check` of the saved config, as the Check page shows it
  explain    {"source","destination","protocol","port","argv"}: asked on the Explain page and
             with argv (`connmark-lb explain --json ...`)

Prints one JSON object per line ({"step": ..., ...}) for the Rust test to assert on, and
exits 0 when every browser step ran (the assertions are the caller's).
"""
import json
import os
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

spec = json.load(open(sys.argv[1]))
base = spec['url'].rstrip('/') + '/cgi-bin/luci/'
CHROMIUM = os.environ.get('KIT_CHROMIUM', '/usr/lib/chromium/chromium')


def report(step, **fields):
    print(json.dumps(dict(step=step, **fields)), flush=True)


def run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout, done.stderr


def kit_gap(message):
    """LuCI's own Save & Apply asks cgi-io (/cgi-bin/cgi-exec luci-peeraddr) for the browser's
    address; the kit does not build cgi-io (its README), so that request is a 404 there."""
    return '/cgi-bin/cgi-exec' in message.location.get('url', '')


def settled(page):
    """The view has rendered: no spinner left in #view and some content."""
    page.wait_for_function(
        "() => { const v = document.querySelector('#view');"
        " return v && !v.querySelector('.spinning') && v.children.length > 0; }", timeout=30000)
    page.wait_for_timeout(300)


def login(page):
    page.goto(base, wait_until='domcontentloaded')
    page.fill('input[name="luci_username"]', 'root')
    page.fill('input[name="luci_password"]', spec['password'])
    with page.expect_navigation(wait_until='domcontentloaded'):
        page.press('input[name="luci_password"]', 'Enter')
    page.wait_for_function(
        "() => document.querySelector('#view') && !document.querySelector('input[name=luci_password]')")


def open_page(page, path):
    try:
        page.goto(base + path, wait_until='domcontentloaded')
    except Exception:
        for argv in (['ss', '-ltnp'], ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{http_code} %{time_total}', base + path]):
            print('diag', argv, run(argv), file=sys.stderr)
        raise
    settled(page)


def visit_pages(page, errors):
    """Every page renders, has its content and logs no JavaScript error."""
    for path in spec['pages']:
        before = len(errors)
        open_page(page, path)
        name = path.rsplit('/', 1)[-1]
        page.screenshot(path=os.path.join(spec['shots'], f'luci-{name}.png'), full_page=True)
        report('page', path=path, title=page.locator('#view h2').first.inner_text(),
               errors=errors[before:])


# Types one value, reads the verdict, puts the field's own value back (cases are independent).
VERDICT = """([id, value]) => {
    const input = document.getElementById(id);
    if (!input) return null;
    const type = (text) => {
        input.value = text;
        for (const kind of ['input', 'keyup', 'change', 'blur'])
            input.dispatchEvent(new Event(kind, { bubbles: true }));
    };
    const own = input.value;
    type(value);
    const accepted = !input.classList.contains('cbi-input-invalid');
    type(own);
    return accepted;
}"""


def verdicts(page, section, cases):
    """Types each value into the option's widget; True where the form accepts it."""
    out = []
    for option, value in cases:
        widget = f'widget.cbid.connmark-lb.{section}.{option}'
        accepted = page.evaluate(VERDICT, [widget, value])
        if accepted is None:
            raise AssertionError(f'no widget {widget}')
        out.append([option, value, accepted])
    return out


def validation(page):
    """The forms' verdicts on values the binary accepts or refuses."""
    open_page(page, 'admin/network/connmark-lb/globals')
    results = {'globals': verdicts(page, 'globals', spec['validation']['globals'])}
    for kind, page_name, section in (('interface', 'interfaces', spec['weight']['section']),
                                     ('rule', 'rules', spec['validation']['rule_section'])):
        open_page(page, f'admin/network/connmark-lb/{page_name}')
        page.click(f'tr[data-sid="{section}"] .cbi-button-edit')
        page.wait_for_selector('.modal .cbi-section', timeout=10000)
        results[kind] = verdicts(page, section, spec['validation'][kind])
        page.screenshot(path=os.path.join(spec['shots'], f'luci-{kind}-dialog.png'), full_page=True)
        page.click('.modal button:has-text("Dismiss")')
    report('validation', results=results)


def set_weight(page, errors):
    """A bad weight is refused in the form; a good one is saved, applied and reloads the daemon."""
    open_page(page, 'admin/network/connmark-lb/interfaces')
    widget = '#widget\\.cbid\\.connmark-lb\\.%s\\.weight' % spec['weight']['section']
    page.fill(widget, '1001')
    page.locator(widget).blur()
    page.wait_for_timeout(200)
    invalid = page.locator(widget).evaluate("e => e.classList.contains('cbi-input-invalid')")
    report('invalid_weight', refused=invalid)
    before = run(spec['ruleset'])[1]
    page.fill(widget, str(spec['weight']['value']))
    page.locator(widget).blur()
    page.locator('.cbi-page-actions .cbi-button-apply').first.click()
    page.wait_for_function(
        "() => document.body.innerText.includes('Configuration changes applied')"
        " || document.body.innerText.includes('rolled back')", timeout=60000)
    applied = 'Configuration changes applied' in page.locator('body').inner_text()
    # procd waits its trigger delay, then the init script's reload sends the daemon SIGHUP.
    deadline, after = time.monotonic() + 15, before
    while time.monotonic() < deadline and after == before:
        time.sleep(0.2)
        after = run(spec['ruleset'])[1]
    report('apply', applied=applied, ruleset_before=before, ruleset_after=after, errors=list(errors))


def link_state(status_json, interface):
    for link in json.loads(status_json).get('links', []):
        if link.get('interface') == interface:
            return link.get('state')
    return None


def watch_link_down(page):
    """After the ISP drops everything, the page shows `down` within one refresh of the daemon."""
    open_page(page, 'admin/network/connmark-lb/status')
    link = spec['down_link']
    row = f'#connmark-lb-links tr[data-interface="{link}"]'
    page.wait_for_selector(f'{row}[data-state="up"]', timeout=20000)
    # Two more refreshes: shares and rates come from the difference of two replies.
    page.wait_for_timeout(6500)
    page.screenshot(path=os.path.join(spec['shots'], 'luci-status.png'), full_page=True)
    figures = page.evaluate('''() => Array.from(document.querySelectorAll('#connmark-lb-links tr[data-interface]'))
        .map(tr => [tr.dataset.interface, ...['New connections', 'Receive', 'Transmit'].map(t => {
            const td = tr.querySelector(`td[data-title="${t}"]`);
            const v = td.dataset.share ?? td.dataset.rate;
            return v === undefined || v === '' ? null : Number(v);
        })])''')
    report('figures', links=figures)
    dropped = time.monotonic()
    code, out, err = run(spec['drop'])
    assert code == 0, f'drop failed: {err}'
    daemon_down = None
    page_down = None
    deadline = dropped + 30
    while time.monotonic() < deadline and (daemon_down is None or page_down is None):
        if daemon_down is None:
            code, out, _ = run(spec['status'])
            if code == 0 and link_state(out, link) == 'down':
                daemon_down = time.monotonic()
        if page_down is None and page.locator(f'{row}[data-state="down"]').count() > 0:
            page_down = time.monotonic()
        time.sleep(0.1)
    text = page.locator(row).inner_text() if page.locator(row).count() else ''
    page.screenshot(path=os.path.join(spec['shots'], 'luci-status-down.png'), full_page=True)
    report('down', daemon_after=None if daemon_down is None else daemon_down - dropped,
           page_after=None if page_down is None else page_down - dropped, row=text)


def check(page):
    """The Check page shows what `connmark-lb check` prints for the saved config."""
    open_page(page, 'admin/network/connmark-lb/check')
    page.wait_for_selector('#connmark-lb-check, #connmark-lb-check-error', timeout=20000)
    body = page.locator('#connmark-lb-check')
    shown = None
    if body.count():
        output = page.locator('#connmark-lb-output')
        shown = {'valid': body.get_attribute('data-valid') == '1',
                 'output': output.inner_text() if output.count() else None}
    page.screenshot(path=os.path.join(spec['shots'], 'luci-check.png'), full_page=True)
    code, out, err = run(spec['check'])
    report('check', page=shown, cli=out if code == 0 else None, cli_error=err,
           page_text=page.locator('#connmark-lb-check-body').inner_text())


def explain(page):
    """The Explain page shows what `connmark-lb explain --json` says."""
    q = spec['explain']
    open_page(page, 'admin/network/connmark-lb/explain')
    page.fill('#connmark-lb-src', q['source'])
    page.fill('#connmark-lb-dst', q['destination'])
    page.select_option('#connmark-lb-proto', q['protocol'])
    page.fill('#connmark-lb-port', str(q['port']))
    page.click('#connmark-lb-explain')
    page.wait_for_selector('#connmark-lb-answer, #connmark-lb-error', timeout=20000)
    answer = page.locator('#connmark-lb-answer')
    shown = None
    if answer.count():
        shown = {key: answer.get_attribute(f'data-{key}') for key in
                 ('decision', 'interface', 'source-address')}
        shown['rule'] = page.locator('#connmark-lb-rule strong').inner_text()
        shown['policy'] = page.locator('#connmark-lb-policy strong').inner_text()
        shown['reason'] = page.locator('#connmark-lb-reason').inner_text()
    page.screenshot(path=os.path.join(spec['shots'], 'luci-explain.png'), full_page=True)
    code, out, err = run(q['argv'])
    report('explain', page=shown, cli=json.loads(out) if code == 0 else None, cli_error=err,
           page_text=page.locator('#connmark-lb-result').inner_text())


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                args=['--no-sandbox', '--headless=new'])
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    page.set_default_timeout(60000)  # generous: other tests share the cores
    errors = []
    page.on('pageerror', lambda e: errors.append(f'pageerror: {e}'))
    page.on('console', lambda m: m.type == 'error' and not kit_gap(m) and errors.append(
        f'console: {m.text} ({m.location.get("url", "")})'))
    started = time.monotonic()
    login(page)
    errors.clear()  # the login page's two denied pre-login calls (see the kit's README)
    report('login', seconds=time.monotonic() - started)
    visit_pages(page, errors)
    validation(page)
    set_weight(page, errors)
    if spec.get('drop'):
        watch_link_down(page)
    if spec.get('check'):
        check(page)
    if spec.get('explain'):
        explain(page)
    report('done', errors=errors, seconds=time.monotonic() - started)
    browser.close()
