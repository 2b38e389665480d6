"""The demo page at / in headless Chromium against a real uvicorn on loopback.

The browser is Debian's ``chromium`` driven through ``chromium-driver`` by Selenium (``make test``
installs both). When either is missing, or the browser does not start, the test fails and says
why: it never skips.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.processes import Uvicorn, start_uvicorn
from graphql_api.app import STATIC_DIR

pytest_plugins = ["tests.api_helpers"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

API_KEY = "demo-key"
WAIT = 30.0
"""Seconds the browser may take for one step (a request and the re-render after it)."""

RECS = """query($u: ID!, $variant: String, $weights: BlendWeightsInput) {
  recommendations(userId: $u, first: 10, variant: $variant, weights: $weights) {
    variant items { score contributions { signal value } item { id } explanation { sentence } }
  }
}"""
SIMILAR = """query($i: ID!) { similarItems(itemId: $i, first: 8, signal: FUSED) {
  ... on SimilarItems { items { item { id } } } } }"""


def test_page_operations_are_valid_against_the_schema() -> None:
    """Every GraphQL document written out in demo.js validates against the served schema."""
    from graphql import parse, validate

    from graphql_api.schema import schema

    source = (STATIC_DIR / "demo.js").read_text()
    documents = dict(re.findall(r"^const (\w+) = `((?:query|mutation) \w+(?:[^`$]|\$(?!\{))*)`;", source, flags=re.M))
    assert set(documents) == {"SETUP", "USER", "USER_SUMMARY", "RECOMMENDATIONS", "RECORD", "SIMILAR", "SEARCH"}
    for name, document in documents.items():
        errors = validate(schema._schema, parse(document))
        assert errors == [], (name, [e.message for e in errors])


def _chromium() -> tuple[str, str]:
    """Paths of the browser and its driver, or a failure that says how to get them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
        pytest.fail(f"{' and '.join(missing)} not found on PATH: the demo-page test needs Debian's chromium "
                    "and chromium-driver (`make browser`, or apt-get install -y chromium chromium-driver)",
                    pytrace=False)
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium session (Selenium), its console log kept for the test to read."""
    chromium, chromedriver = _chromium()
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
    except ImportError as err:
        pytest.fail(f"selenium is not installed ({err}): pip install -e '.[test]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1500", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_log = tmp_path / "chromedriver.log"
    service = webdriver.ChromeService(executable_path=chromedriver, log_output=str(driver_log))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as err:
        tail = driver_log.read_text(errors="replace")[-3000:] if driver_log.exists() else ""
        pytest.fail(f"headless Chromium did not start ({chromium}, {chromedriver}): {err.msg}\n{tail}",
                    pytrace=False)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(api_root: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Uvicorn]:
    """The API with keys configured, so that recordInteraction needs one (extra settings by indirect
    parametrisation)."""
    env = {"HYBRIDREC_BUNDLE_ROOT": str(api_root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
           "HYBRIDREC_API_KEYS": API_KEY, "HYBRIDREC_RELOAD_INTERVAL": "0.2", **getattr(request, "param", {})}
    uvicorn = start_uvicorn(env, tmp_path / "uvicorn.log")
    try:
        yield uvicorn
    finally:
        uvicorn.stop()


def _api(server: Uvicorn, query: str, **variables: Any) -> dict[str, Any]:
    body = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": variables}, timeout=WAIT).json()
    assert not body.get("errors"), body
    return body["data"]


def _rendered(driver: Any) -> list[dict[str, Any]]:
    """The recommendation cards as the page shows them."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#recs .rec')].map((card) => ({
          id: card.dataset.item,
          score: Number(card.dataset.score),
          parts: [...card.querySelectorAll('.bar .seg')].map((s) => [s.dataset.signal, Number(s.dataset.value)]),
          widths: [...card.querySelectorAll('.bar .seg')].map((s) => s.getBoundingClientRect().width),
          sentence: card.querySelector('.sentence').textContent,
        }));""")


def _ids(driver: Any) -> list[str]:
    return [card["id"] for card in _rendered(driver)]


def _history(driver: Any) -> list[tuple[str, str]]:
    return [(li.get_attribute("data-item"), li.get_attribute("data-source"))
            for li in driver.find_elements("css selector", "#history .hist")]


def _wait(driver: Any, what: str, condition: Any) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT).until(lambda d: condition(d))
    except TimeoutException:
        error = driver.execute_script("return document.getElementById('error').textContent")
        pytest.fail(f"the page never showed {what} within {WAIT}s (error banner: {error!r})")


def _rec_variant(driver: Any) -> str | None:
    return driver.execute_script("return document.getElementById('rec-variant')?.textContent ?? null")


def _check_matches_api(driver: Any, server: Uvicorn, user: str, **args: Any) -> list[dict[str, Any]]:
    """The page's ten cards are the API's answer, with every contribution drawn and adding up to the score."""
    expected = _api(server, RECS, u=user, **args)["recommendations"]["items"]
    cards = _rendered(driver)
    assert [c["id"] for c in cards] == [e["item"]["id"] for e in expected]
    assert len(cards) == 10
    for card, want in zip(cards, expected, strict=True):
        drawn = dict(card["parts"])
        assert drawn == {c["signal"]: pytest.approx(c["value"]) for c in want["contributions"] if c["value"] != 0}
        assert math.isclose(sum(drawn.values()), card["score"], rel_tol=1e-6, abs_tol=1e-9)
        assert drawn and len(card["widths"]) == len(drawn) and all(w > 0 for w in card["widths"]), card
        assert card["sentence"] == want["explanation"]["sentence"] and card["sentence"]
    return cards


def test_demo_page_in_headless_chromium(browser: Any, server: Uvicorn, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    # the page and its files are served beside the API; GraphiQL stays at /graphql
    page = httpx.get(f"{server.url}/", timeout=WAIT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/demo.js"' in page.text
    assert httpx.get(f"{server.url}/static/demo.js", timeout=WAIT).headers["content-type"].startswith("text/javascript")
    assert "graphiql" in httpx.get(f"{server.url}/graphql", headers={"accept": "text/html"}, timeout=WAIT).text.lower()

    driver = browser
    driver.get(f"{server.url}/")
    _wait(driver, "the model and its variants", lambda d: d.execute_script("return document.body.dataset.ready"))
    assert driver.find_element("id", "model-version").text == "v1"
    variants = [v["name"] for v in _api(server, "{ variants { name } }")["variants"]]
    options = [o.get_attribute("value") for o in Select(driver.find_element("id", "variant")).options]
    assert options == ["", *variants, "custom"]

    # pick a user from the known-user chips
    chip = _wait(driver, "the known-user chips", lambda d: d.find_elements("css selector", '#user-suggestions [data-user="3"]'))
    chip[0].click()
    _wait(driver, "ten recommendations", lambda d: len(_ids(d)) == 10 and _rec_variant(d) is not None)
    assert _rec_variant(driver) == "tuned"
    before = _check_matches_api(driver, server, "3")
    assert {s for c in before for s, _ in c["parts"]} == {"COLLABORATIVE", "CONTENT", "POPULARITY"}
    # without a key the history is not readable (the server has keys): the page says what it needs
    note = _wait(driver, "the history's key note", lambda d: d.find_elements("id", "history-needs-key"))
    assert "read scope" in note[0].text and _history(driver) == []
    assert "trained interactions" in driver.find_element("id", "user-summary").text

    # mark the top item as watched: first without a key (refused), then with one
    top = before[0]["id"]
    driver.find_element("css selector", f'#recs .rec[data-item="{top}"] button.watched').click()
    error = _wait(driver, "the missing-key error", lambda d: d.find_element("id", "error").is_displayed()
                  and d.find_element("id", "error").text)
    assert "API key" in error and "FORBIDDEN" in error
    assert _ids(driver) == [c["id"] for c in before]
    assert not (tmp_path / "events" / "events.jsonl").exists() or top not in (tmp_path / "events" / "events.jsonl").read_text()

    driver.find_element("id", "api-key").send_keys(API_KEY)
    driver.find_element("css selector", f'#recs .rec[data-item="{top}"] button.watched').click()
    _wait(driver, "the list without the watched item", lambda d: len(_ids(d)) == 10 and top not in _ids(d))
    _wait(driver, "the watched item on top of the history", lambda d: _history(d)[:1] == [(top, "ONLINE")])
    trained = _history(driver)[1:]
    assert trained and all(source == "TRAINED" for _, source in trained)
    assert not driver.find_element("id", "error").is_displayed()
    events = [json.loads(line) for line in (tmp_path / "events" / "events.jsonl").read_text().splitlines()]
    assert [(e["user_id"], e["item_id"]) for e in events] == [("3", top)]
    after = _check_matches_api(driver, server, "3")
    assert [c["id"] for c in after] != [c["id"] for c in before]

    # switch the blend variant
    Select(driver.find_element("id", "variant")).select_by_value("popularity")
    _wait(driver, "the popularity variant", lambda d: _rec_variant(d) == "popularity")
    popular = _check_matches_api(driver, server, "3", variant="popularity")
    assert {s for c in popular for s, _ in c["parts"]} == {"POPULARITY"}

    # move a slider: the page sends per-request weights
    Select(driver.find_element("id", "variant")).select_by_value("tuned")
    _wait(driver, "the tuned variant again", lambda d: _rec_variant(d) == "tuned")
    driver.find_element("id", "w-POPULARITY").send_keys(Keys.END)
    _wait(driver, "the custom blend", lambda d: _rec_variant(d) == "custom")
    # the sliders' values, by BlendWeightsInput field (the Signal enum value in lower case)
    weights = driver.execute_script("""
        return Object.fromEntries([...document.querySelectorAll('#sliders input')].map(
          (i) => [i.dataset.signal.toLowerCase(), Number(i.value)]));""")
    assert set(weights) == {"collaborative", "content", "popularity"}
    assert weights["popularity"] > 0.3
    custom = _check_matches_api(driver, server, "3", weights=weights)
    assert [c["id"] for c in custom] != [c["id"] for c in after]

    # similar items of the top recommendation
    first = custom[0]["id"]
    driver.find_element("css selector", f'#recs .rec[data-item="{first}"] button.similar-btn').click()
    _wait(driver, "the similar items", lambda d: d.find_elements("css selector", "#similar-items .similar"))
    similar = [e.get_attribute("data-item") for e in driver.find_elements("css selector", "#similar-items .similar")]
    expected = [s["item"]["id"] for s in _api(server, SIMILAR, i=first)["similarItems"]["items"]]
    assert similar == expected and len(similar) == 8
    assert all(e.find_elements("css selector", ".bar .seg")
               for e in driver.find_elements("css selector", "#similar-items .similar"))
    driver.find_element("id", "similar-close").click()
    _wait(driver, "the dialog closed", lambda d: not d.find_element("id", "similar").get_attribute("open"))

    # the GraphQL log names each operation the page sent
    sent = {e.get_attribute("data-operation") for e in driver.find_elements("css selector", "#request-log .request")}
    assert {"DemoSetup", "DemoKnownUsers", "DemoUser", "DemoRecommendations", "DemoWatched", "DemoSimilar"} <= sent

    shot = tmp_path / "demo-page.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe


@pytest.mark.parametrize("server", [{"HYBRIDREC_REQUIRE_KEY_FOR_QUERIES": "true"}], indirect=True)
def test_demo_page_asks_for_a_key_when_every_operation_needs_one(browser: Any, server: Uvicorn) -> None:
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(f"{server.url}/?user=3")
    error = _wait(driver, "the missing-key error", lambda d: d.find_element("id", "error").is_displayed()
                  and d.find_element("id", "error").text)
    assert "UNAUTHENTICATED" in error and "API key" in error
    assert driver.find_elements("css selector", "#recs .rec") == []
    driver.find_element("id", "api-key").send_keys(API_KEY + Keys.ENTER)  # the page reloads with the key
    _wait(driver, "ten recommendations after the key", lambda d: len(_ids(d)) == 10)
    assert not driver.find_element("id", "error").is_displayed()
    assert driver.find_element("id", "model-version").text == "v1"
