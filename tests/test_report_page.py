"""`nascli report`: the one-page HTML report, checked as a person would see it in headless Chromium,
and on runs in progress, moved, several at once and damaged."""

import json
import re
import shutil
from pathlib import Path

import pytest

from nascli.protocol import summarize
from nascli.report import compare
from nascli.retrain import Promotion, retrain
from nascli.search import run_search
from nascli.spaces import auto_fpn
from nascli.store import RunStore

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def reported_run(tiny_cache, tiny_test, tmp_path_factory):
    """A 3-trial random search, one trial added as failed, the best and the control retrained with
    2 seeds (the test verdict needs them)."""
    from conftest import TINY_PROXY

    root = tmp_path_factory.mktemp("reported")
    proxy = root / "tiny.yaml"
    proxy.write_text(TINY_PROXY)
    run = root / "run"
    run_search("random", proxy, tiny_cache, 3, run, seed=0)
    retrain(run, Promotion(val=tiny_test, top=1, epochs=1, lr=0.01, seeds=2, device="cpu"))
    store = RunStore(run, create=False)
    [failed] = store.add_pending([store.trial(1).genotype], [99], store.load_state())
    store.finish(failed, "failed", None, {"reason": "validation loss is not finite"})
    store.close()
    return run


@pytest.fixture
def run(reported_run, tmp_path):
    return shutil.copytree(reported_run, tmp_path / "run")


def _trial_rows(page: str) -> int:
    return len(re.findall(r"<tr class='trial ", page))


def _browser(tmp_path):
    """Headless Debian Chromium driven by its chromedriver, console messages kept; skips (with the
    reason) where the browser cannot be installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip("Debian's chromium and chromium-driver are not installed here (.ci/run installs them; "
                    "apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def test_the_report_shows_a_person_the_verdicts_every_trial_and_every_image(run, run_cli, tmp_path):
    out = tmp_path / "elsewhere" / "report.html"
    code, said, err = run_cli("report", run, "--out", out)
    assert code == 0, err
    store = RunStore(run, create=False)
    proxy_verdict, trials = summarize(store)["verdict"]["text"], store.trials()
    store.close()
    test_verdict = compare([run])["test_verdict"][str(run)]["text"]
    assert proxy_verdict in said.replace("\n", " ") or proxy_verdict[:40] in said
    page = out.read_text()
    assert not re.search(r"""(src|href)=['"]?https?:""", page), "the report must not fetch anything"
    driver = _browser(tmp_path)
    try:
        driver.get(out.as_uri())
        text = driver.find_element("tag name", "body").text
        assert proxy_verdict in text and test_verdict in text
        assert "validation loss is not finite" in text  # the failed trial's reason
        rows = driver.find_elements("css selector", "tr.trial")
        assert len(rows) == len(trials) == 5  # control + 3 trials + the failed one
        assert len(driver.find_elements("css selector", "tr.trial.control")) == 1
        assert len(driver.find_elements("css selector", "tr.trial.failed")) == 1
        images = driver.find_elements("tag name", "img")
        assert len(images) >= 4  # compare, rewards, the control's and the promoted trial's drawings
        widths = driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert all(w > 0 for w in widths), widths
        # sorting: clicking "reward" orders the trial rows by reward, twice reverses it
        header = next(th for th in driver.find_elements("css selector", "table:has(tr.trial) th") if th.text == "reward")
        header.click()
        cells = [r.find_elements("tag name", "td")[2].text for r in driver.find_elements("css selector", "tr.trial")]
        shown = [float(c) for c in cells if c]
        assert shown == sorted(shown) and len(shown) == 4  # the failed trial has no reward
        header.click()
        cells = [r.find_elements("tag name", "td")[2].text for r in driver.find_elements("css selector", "tr.trial")]
        assert [float(c) for c in cells if c] == sorted(shown, reverse=True)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_a_damaged_run_database_is_one_line_and_nothing_is_written(run, run_cli, tmp_path):
    db = run / "run.db"
    data = bytearray(db.read_bytes())
    data[100:4000] = b"\x00" * 3900  # the first page's b-tree: sqlite sees a malformed file
    db.write_bytes(bytes(data))
    out = tmp_path / "report.html"
    code, _, err = run_cli("report", run, "--out", out)
    assert code == 2 and str(db) in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".report.html*"))


def test_a_run_in_progress_and_moved_elsewhere_shows_what_is_done(run, tmp_path, monkeypatch):
    from nascli.report_page import write_report

    store = RunStore(run, create=False)
    store.db.execute("UPDATE trials SET status = 'pending', reward = NULL, finished = NULL WHERE id = 3")
    store.close()
    moved = shutil.move(str(run), str(tmp_path / "moved" / "r"))
    monkeypatch.chdir(tmp_path)
    r = write_report([moved], tmp_path / "progress.html")
    page = Path(r["report"]).read_text()
    assert "1 still pending" in page and _trial_rows(page) == 5
    assert r["runs"][0]["test_verdict"] is not None  # the retrained rows moved with it


def test_several_runs_make_one_page_that_compares_them(run, reported_run, tmp_path):
    from nascli.report_page import write_report

    r = write_report([reported_run, run], tmp_path / "two.html")
    page = Path(r["report"]).read_text()
    assert "Runs side by side" in page and "All runs: retrained architectures" in page
    overview = page.split("Runs side by side")[1].split("</table>")[0]
    assert overview.count("<tr class='overview") == 2
    assert _trial_rows(page) == 10 and len(r["runs"]) == 2


def test_auto_fpn_op_shares_count_none_skip_and_parametric_links():
    """Neck: 2 layers x 3x3 links; head: 2 cells x 14 edges; 46 in all. One layer all skip (9),
    three none links in the other, the rest sep3x3 (2)."""
    neck = (((1, 1, 1), (1, 1, 1), (1, 1, 1)), ((0, 2, 2), (2, 0, 2), (2, 2, 0)))
    head = tuple(tuple([2] * 14) for _ in range(2))
    g = auto_fpn.Genotype(neck=neck, head=head)
    assert auto_fpn.validate(g) is None
    shares = auto_fpn.op_shares(g)
    assert shares == pytest.approx({"none": 3 / 46, "skip": 9 / 46, "parametric": 34 / 46})


def test_the_json_output_names_the_page_and_its_verdicts(run, run_cli, tmp_path):
    code, out, _ = run_cli("report", run, "--out", tmp_path / "r.html", "--json")
    r = json.loads(out)
    assert code == 0 and Path(r["report"]).is_file() and r["runs"][0]["trials"] == 5
    assert r["runs"][0]["proxy_verdict"].startswith("on the proxy")
