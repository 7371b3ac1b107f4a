"""The search page's filters, paging and API key, in headless Chromium against a real API in keys
mode (gunicorn, ``IMAGESEARCH_AUTH=keys``) and a real embed worker.

Products are uploaded through the API with a title (some Chinese), tags and typed attributes
(``IMAGESEARCH_ATTRIBUTES``); a few carry an EXIF ``DateTimeOriginal``. The page must:

- without a key, say that the API needs one and point at the key field; with the key (kept in
  sessionStorage, never localStorage) search, show thumbnails (fetched with the key: an <img> cannot
  send a header), upload and poll;
- send the filter language for the tags field, a date range (on created_at, or taken_at) and the
  attribute filter, show how many filters are active, and clear them;
- page with "Load more": the same body plus ``page_token``, hits appended, no id twice, the button gone
  on the last page, and paging started again when the query, filters or mode change.

The browser runs in Asia/Shanghai so that a date filter's days are local days, not UTC ones.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from imagesearch.apikeys import KeyRing
from imagesearch.config import Settings
from imagesearch.redis_state import connect
from tests.e2e.test_search_page import CHROMIUM, CHROMIUM_ARGS, _hit_ids, _is_search, _wait_status
from tests.support.processes import start_api, start_worker

ATTRIBUTES = "brand:keyword,price:number,in_stock:boolean"
TIMEZONE = "Asia/Shanghai"
N = 14  # products; with 12 results a page, the second page is the last
TAKEN = "2019:06:01 12:00:00"  # EXIF DateTimeOriginal of the first three products
KEY_STORAGE = "imagesearch.apiKey"
QUERY = "a product photo"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium "
                       "(apt-get install -y chromium; scripts/install.sh does it)"),
]


def _product(i: int) -> dict:
    return {"title": f"红色杯子 {i}" if i % 2 else f"Product {i}",
            "tags": "sale" if i % 3 == 0 else "new",
            "attributes": {"brand": ["acme", "zeta"][i % 2], "price": float(i * 10), "in_stock": i % 4 != 0}}


def _image(i: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 72), ((i * 53) % 256, (i * 97 + 40) % 256, (i * 151 + 90) % 256))
    ImageDraw.Draw(image).ellipse((8 + i * 3, 8, 40 + i * 3, 40 + i), fill=(255 - i * 10, 255, 255))
    exif = Image.Exif()
    if i < 3:
        exif.get_ifd(0x8769)[0x9003] = TAKEN  # DateTimeOriginal
        exif.get_ifd(0x8769)[0x9011] = "+00:00"  # OffsetTimeOriginal
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


class Stack:
    def __init__(self, base: str, key: str, products: dict[str, dict]) -> None:
        self.base, self.key, self.products = base, key, products

    def ids(self, keep=lambda p: True) -> set[str]:
        return {i for i, p in self.products.items() if keep(p)}

    def indexed(self) -> set[str]:
        """Every indexed image of the key's tenant, as the API lists it (the keys test adds one)."""
        found: set[str] = set()
        cursor = None
        while True:
            params = {"status": "indexed", "limit": 100, **({"cursor": cursor} if cursor else {})}
            page = requests.get(f"{self.base}/v1/images", params=params, headers=self.auth(), timeout=30).json()
            found |= {r["id"] for r in page["records"]}
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture(scope="module")
def stack(redis_client, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("page-filters") / "data"
    data_dir.mkdir()
    settings = Settings()
    key = KeyRing(connect(settings.redis.url), settings.keys).create("page-test", "shop")
    api, base = start_api(data_dir, "api-page-filters", IMAGESEARCH_AUTH="keys", IMAGESEARCH_ATTRIBUTES=ATTRIBUTES)
    worker = start_worker(data_dir, "worker-page-filters", queues=("embed",), IMAGESEARCH_ATTRIBUTES=ATTRIBUTES)
    try:
        products: dict[str, dict] = {}
        auth = {"Authorization": f"Bearer {key}"}
        for i in range(N):
            product = _product(i)
            response = requests.post(
                f"{base}/v1/images", headers=auth, timeout=60,
                files={"file": (f"product-{i}.jpg", _image(i), "image/jpeg")},
                data={"title": product["title"], "tags": product["tags"],
                      "attributes": json.dumps(product["attributes"])})
            assert response.status_code == 202, response.text
            products[response.json()["id"]] = {**product, "i": i, **product["attributes"]}
        assert requests.get(f"{base}/v1/images", timeout=30).status_code == 401  # keys mode indeed
        stack = Stack(base, key, products)
        deadline = datetime.now() + timedelta(seconds=240)
        while stack.indexed() != set(products):
            assert datetime.now() < deadline, "the uploads were not indexed in time"
            time.sleep(0.5)
        records = {i: requests.get(f"{base}/v1/images/{i}", headers=auth, timeout=30).json() for i in products}
        assert {i for i, r in records.items() if r["taken_at"] is not None} == \
            {i for i, p in products.items() if p["i"] < 3}, records
        assert all(r["attributes"] == products[i]["attributes"] for i, r in records.items()), records
        yield stack
    finally:
        worker.close()
        api.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watch:
    """A page's script errors and its failed HTTP answers, to check that only the provoked ones happened."""

    def __init__(self, page) -> None:
        self.problems: list[str] = []
        self.failed: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: self.failed.append(f"{r.status} {r.request.method} {r.url}")
                if r.status >= 400 else None)

    def clean(self, allowed_status: int | None = None) -> None:
        assert all(allowed_status and f.startswith(f"{allowed_status} ") for f in self.failed), self.failed
        marker = f"status of {allowed_status}" if allowed_status else None
        assert [p for p in self.problems if not (marker and marker in p)] == [], self.problems


def _open(browser, stack: Stack, key: str | None):
    context = browser.new_context(viewport={"width": 1360, "height": 940}, timezone_id=TIMEZONE)
    if key:
        context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})")
    page = context.new_page()
    page.set_default_timeout(60_000)
    watch = Watch(page)
    page.goto(stack.base + "/")
    return context, page, watch


def _body(request) -> dict:
    assert request.headers.get("content-type", "").startswith("application/json"), request.headers
    return json.loads(request.post_data)


def _is_json(request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


def _searching(expected_filter):
    """A predicate for the search request whose filter is ``expected_filter`` (None: no filter; a
    multipart search, which cannot carry one, counts as unfiltered)."""
    return lambda r: _is_search(r) and (_body(r).get("filter") if _is_json(r) else None) == expected_filter


def _wait_ids(page, ids: set[str]) -> None:
    page.wait_for_function("ids => { const shown = Array.from(document.querySelectorAll('#results .hit'),"
                           " e => e.dataset.id); return shown.length === ids.length"
                           " && ids.every(i => shown.includes(i)); }", arg=sorted(ids))


def _wait_thumbnails(page) -> None:
    page.wait_for_function("Array.from(document.querySelectorAll('#results .hit img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")


def _local_midnight(day: date) -> str:
    """What the page sends for a day: its local midnight (in the browser's time zone) in UTC, as JS writes it."""
    instant = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(TIMEZONE)).astimezone(UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_filters_send_the_filter_language_and_narrow_the_results(browser, stack, tmp_path):
    context, page, watch = _open(browser, stack, stack.key)
    try:
        page.fill("#query", QUERY)
        page.click("#search-button")
        _wait_ids(page, stack.indexed())
        assert page.locator("#filter-count").is_hidden()
        assert page.locator("#filters").is_hidden()
        page.click("#filters-toggle")
        assert page.locator("#filters").is_visible()
        # The attribute select offers what the API declares, nothing else.
        assert page.eval_on_selector_all("#filter-attr option", "os => os.map(o => o.value)") == \
            ["", "brand", "price", "in_stock"]

        # Tags: any of the comma-separated tags.
        with page.expect_request(_searching({"tags": {"any": ["sale"]}})):
            page.fill("#filter-tags", " sale, ")
            page.press("#filter-tags", "Enter")
        sale = stack.ids(lambda p: p["tags"] == "sale")
        _wait_ids(page, sale)
        assert page.inner_text("#filter-count") == "1"
        _wait_status(page, "filtered by tags")

        # One attribute, with the operator its type allows; combined with the tags (and).
        page.select_option("#filter-attr", "brand")
        assert page.eval_on_selector("#filter-op option[value=range]", "o => o.disabled")  # a keyword has no range
        with page.expect_request(_searching({"tags": {"any": ["sale"]}, "attributes": {"brand": {"eq": "acme"}}})):
            page.fill("#filter-value", "acme")
            page.press("#filter-value", "Enter")
        _wait_ids(page, sale & stack.ids(lambda p: p["brand"] == "acme"))
        assert page.inner_text("#filter-count") == "2"
        _wait_thumbnails(page)
        page.screenshot(path=str(tmp_path / "filters.png"), full_page=True, animations="disabled")  # to look at

        # A number range, without the tags.
        page.fill("#filter-tags", "")
        page.select_option("#filter-attr", "price")
        page.select_option("#filter-op", "range")
        page.fill("#filter-min", "30")
        page.press("#filter-min", "Tab")
        with page.expect_request(_searching({"attributes": {"price": {"range": {"gte": 30, "lte": 80}}}})):
            page.fill("#filter-max", "80")
            page.press("#filter-max", "Tab")
        _wait_ids(page, stack.ids(lambda p: 30 <= p["price"] <= 80))
        assert page.inner_text("#filter-count") == "1"

        # A boolean: true or false from a select.
        page.select_option("#filter-attr", "in_stock")
        with page.expect_request(_searching({"attributes": {"in_stock": {"eq": False}}})):
            page.select_option("#filter-bool", "false")
        _wait_ids(page, stack.ids(lambda p: not p["in_stock"]))

        # Dates: the range is of local days, both ends inclusive, on created_at...
        page.select_option("#filter-attr", "")
        today = datetime.now(ZoneInfo(TIMEZONE)).date()
        page.fill("#filter-from", today.isoformat())
        expected = {"created_at": {"gte": _local_midnight(today), "lt": _local_midnight(today + timedelta(days=1))}}
        with page.expect_request(_searching(expected)):
            page.fill("#filter-to", today.isoformat())
        _wait_ids(page, stack.indexed())
        tomorrow = (today + timedelta(days=1)).isoformat()
        with page.expect_request(_searching({"created_at": {"gte": _local_midnight(today + timedelta(days=1))}})):
            page.fill("#filter-to", "")
            page.fill("#filter-from", tomorrow)
        page.wait_for_function("document.querySelectorAll('#results .hit').length === 0")
        assert "No matches with these filters" in page.inner_text("#empty")
        # ... or on taken_at (EXIF): only the photos taken in June 2019.
        page.fill("#filter-from", "2019-06-01")
        page.fill("#filter-to", "2019-06-01")
        taken = {"taken_at": {"gte": _local_midnight(date(2019, 6, 1)), "lt": _local_midnight(date(2019, 6, 2))}}
        with page.expect_request(_searching(taken)):
            page.select_option("#filter-date-field", "taken_at")
        _wait_ids(page, stack.ids(lambda p: p["i"] < 3))
        _wait_status(page, "filtered by date taken")

        # A search by image goes as JSON (base64) when filtered: multipart cannot carry a filter.
        with page.expect_request(_is_search) as sent:
            page.set_input_files("#query-file", files=[{"name": "q.jpg", "mimeType": "image/jpeg",
                                                         "buffer": _image(5)}])
        body = _body(sent.value)
        assert body["filter"] == taken and body["image"] and "text" not in body
        _wait_ids(page, stack.ids(lambda p: p["i"] < 3))

        # "Clear filters": no filter in the request (the search by image is multipart again), no
        # badge, everything back.
        with page.expect_request(_searching(None)) as sent:
            page.click("#filters-clear")
        assert sent.value.headers["content-type"].startswith("multipart/form-data")
        assert page.locator("#filter-count").is_hidden()
        _wait_ids(page, stack.indexed())
        _wait_thumbnails(page)
        watch.clean()
    finally:
        context.close()


def test_load_more_appends_the_next_page_until_the_last(browser, stack):
    context, page, watch = _open(browser, stack, stack.key)
    try:
        everything = stack.indexed()
        page.select_option("#k", "12")
        page.fill("#query", QUERY)
        with page.expect_response(lambda r: _is_search(r.request)) as answer:
            page.click("#search-button")
        first = answer.value.json()
        first_body = _body(answer.value.request)
        assert "page_token" not in first_body and len(first["hits"]) == 12 and first["next_page_token"]
        page.wait_for_function("document.querySelectorAll('#results .hit').length === 12")
        assert page.locator("#load-more").is_visible()
        seen = [h["id"] for h in first["hits"]]
        token = first["next_page_token"]
        while token:
            with page.expect_response(lambda r: _is_search(r.request)) as answer:
                page.click("#load-more")
            sent = _body(answer.value.request)
            assert sent == {**first_body, "page_token": token}, sent
            assert answer.value.status == 200, answer.value.text()
            page_hits = [h["id"] for h in answer.value.json()["hits"]]
            assert page_hits and not set(page_hits) & set(seen), (page_hits, seen)
            seen += page_hits
            token = answer.value.json()["next_page_token"]
            page.wait_for_function(f"document.querySelectorAll('#results .hit').length === {len(seen)}")
        assert _hit_ids(page) == seen  # appended in order
        assert set(seen) == everything and len(seen) == len(everything)
        assert page.locator("#load-more").is_hidden()
        _wait_status(page, f"{len(seen)} results")
        _wait_thumbnails(page)

        # Another mode starts again from its first page.
        with page.expect_request(_is_search) as sent:
            page.click("label:has(input[value=hybrid])")
        assert "page_token" not in _body(sent.value)
        _wait_status(page, "hybrid mode")
        page.wait_for_function("document.querySelectorAll('#results .hit').length === 12")
        assert page.locator("#load-more").is_visible()
        # So does a filter: 5 sale products fit on one page, and then there is no more.
        page.click("#filters-toggle")
        with page.expect_request(_searching({"tags": {"any": ["sale"]}})) as sent:
            page.fill("#filter-tags", "sale")
            page.press("#filter-tags", "Enter")
        assert "page_token" not in _body(sent.value)
        _wait_ids(page, stack.ids(lambda p: p["tags"] == "sale"))
        assert page.locator("#load-more").is_hidden()
        watch.clean()
    finally:
        context.close()


def test_keys_mode_needs_the_key_field_and_then_everything_works(browser, stack, tmp_path):
    context, page, watch = _open(browser, stack, None)
    try:
        assert page.inner_text("#key-state") == "Key needed"
        page.fill("#query", QUERY)
        with page.expect_response(lambda r: _is_search(r.request)) as answer:
            page.click("#search-button")
        assert answer.value.status == 401
        assert "authorization" not in answer.value.request.headers
        page.wait_for_selector("#search-status.error")
        assert "needs an API key" in page.inner_text("#search-status")
        assert "key button" in page.inner_text("#search-status")

        # The message's button opens the key field; saving the key runs the search again, with it.
        page.click("#enter-key")
        assert page.locator("#key-panel").is_visible()
        assert page.evaluate("document.activeElement.id") == "api-key"
        assert page.get_attribute("#api-key", "type") == "password"
        with page.expect_request(_is_search) as sent:
            page.fill("#api-key", stack.key)
            page.press("#api-key", "Enter")
        assert sent.value.headers["authorization"] == f"Bearer {stack.key}"
        assert page.locator("#key-panel").is_hidden()
        assert page.inner_text("#key-state") == "Key set"
        _wait_ids(page, stack.indexed())
        # Thumbnails are fetched with the key and shown from object URLs.
        _wait_thumbnails(page)
        sources = page.eval_on_selector_all("#results .hit img", "is => is.map(i => i.src)")
        assert sources and all(s.startswith("blob:") for s in sources), sources
        # Titles show on the cards, Chinese ones too.
        titles = page.eval_on_selector_all(
            "#results .hit", "es => Object.fromEntries(es.map(e => [e.dataset.id, e.querySelector('.hit-title')"
                             " ? e.querySelector('.hit-title').textContent : null]))")
        assert titles == {i: p["title"] for i, p in stack.products.items() if i in titles}, titles
        assert any("红色杯子" in t for t in titles.values())
        # An example chip shows its thumbnail (fetched with the key too) and the hit's title.
        liked = next(i for i in _hit_ids(page) if stack.products.get(i))
        with page.expect_request(_is_search) as sent:
            page.locator(f"#results .hit[data-id='{liked}'] .more").click()
        assert sent.value.headers["authorization"] == f"Bearer {stack.key}"
        chip = page.locator(f"#example-list .example[data-id='{liked}']")
        assert chip.locator(".example-label").inner_text() == stack.products[liked]["title"]
        page.wait_for_function("i => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')",
                               arg=chip.locator("img").element_handle())
        _wait_status(page, "more like 1 image")
        page.click("#examples-clear")

        # The key is in this tab's sessionStorage, never in localStorage; a reload keeps it.
        assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_STORAGE)})") == stack.key
        assert page.evaluate("JSON.stringify(localStorage)") == "{}"
        page.reload()
        assert page.inner_text("#key-state") == "Key set"
        page.fill("#query", QUERY)
        page.click("#search-button")
        _wait_ids(page, stack.indexed())

        # Upload and polling carry the key too: the upload becomes indexed.
        upload = tmp_path / "new-product.jpg"
        upload.write_bytes(_image(20))
        page.set_input_files("#upload-input", [str(upload)])
        page.wait_for_function("document.querySelector('#upload-list .upload[data-status=indexed]') !== null",
                               timeout=240_000)
        uploaded = page.eval_on_selector("#upload-list .upload", "e => e.dataset.id")
        assert uploaded in stack.indexed()

        # "Forget key" drops it; a search is refused again and says so.
        page.click("#key-button")
        with page.expect_response(lambda r: _is_search(r.request)) as answer:
            page.click("#key-forget")
        assert answer.value.status == 401
        page.wait_for_selector("#search-status.error")
        assert "needs an API key" in page.inner_text("#search-status")
        assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_STORAGE)})") is None
        # A wrong key is refused with its own message.
        page.click("#key-button")
        with page.expect_response(lambda r: _is_search(r.request)) as answer:
            page.fill("#api-key", "isk_not-a-key")
            page.press("#api-key", "Enter")
        assert answer.value.status == 401
        page.wait_for_selector("#search-status.error")
        assert "refused the key" in page.inner_text("#search-status")
        watch.clean(allowed_status=401)
    finally:
        context.close()
