// imagesearch search page: vanilla JS over the public API (POST /v1/search, POST /v1/images,
// GET /v1/images/<id>, thumbnails). No build step, no dependencies.
(() => {
  "use strict";

  const $ = (selector) => document.querySelector(selector);
  const form = $("#search-form");
  const queryInput = $("#query");
  const queryRow = $("#query-drop");
  const queryFile = $("#query-file");
  const queryChip = $("#query-image");
  const collectionInput = $("#collection");
  const kSelect = $("#k");
  const cutoffToggle = $("#cutoff");
  const searchButton = $("#search-button");
  const statusLine = $("#search-status");
  const exampleBar = $("#examples");
  const exampleList = $("#example-list");
  const results = $("#results");
  const empty = $("#empty");
  const emptyText = empty.querySelector("p").textContent;
  const dropzone = $("#dropzone");
  const uploadInput = $("#upload-input");
  const uploadCollection = $("#upload-collection");
  const uploadList = $("#upload-list");
  const loadMore = $("#load-more");
  const collections = new Set();

  // The query is the text typed in the box or an image file (dropped or chosen). "More like this" /
  // "Less like this" on a result (a click on a result is "More like this") add indexed images as
  // positive or negative examples; while there are any, the text and the image file join them as
  // positive examples and the search goes as {positive, negative}.
  let imageQuery = null; // {file}
  const examples = []; // {imageId, polarity: "positive" | "negative", label, thumb}
  const MAX_EXAMPLES = 8; // per list, as the API allows
  let searchSeq = 0;
  // The last search's paging: what to send again with page_token, and the ids shown so far.
  let paging = null; // {seq, request, token, shown: Set of ids, calibrated, first: the first page's answer}
  let sentFilter = "null"; // the filter (JSON) of the last search: a change of inputs that leaves it alone sends nothing

  const mode = () => document.querySelector('input[name="mode"]:checked').value;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const hasQuery = () => Boolean(imageQuery || queryInput.value.trim() || examples.length);

  // ---- API key -----------------------------------------------------------------------------
  // An API in keys mode wants "Authorization: Bearer <key>" on every /v1 call. The key lives in
  // sessionStorage: it is gone when the tab closes, and other tabs and later visits never see it.

  const KEY_STORAGE = "imagesearch.apiKey";
  const keyButton = $("#key-button");
  const keyPanel = $("#key-panel");
  const keyInput = $("#api-key");
  const keysMode = document.body.dataset.auth === "keys";
  let apiKey = "";
  try { apiKey = sessionStorage.getItem(KEY_STORAGE) || ""; } catch (_) { /* storage disabled */ }

  function api(url, options = {}) {
    const headers = new Headers(options.headers || {});
    if (apiKey) headers.set("Authorization", `Bearer ${apiKey}`);
    return fetch(url, { ...options, headers });
  }

  class ApiFailure extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function apiError(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error.message || body.error.code;
    } catch (_) { /* not JSON */ }
    if (response.status === 401) {
      keyButton.classList.add("attention");
      message = apiKey
        ? `The API refused the key (${message}). Check the API key under the key button at the top right.`
        : "This API needs an API key: enter it under the key button at the top right.";
    } else if (response.status === 403) {
      message = `The API key is not allowed to do this (${message}).`;
    }
    return new ApiFailure(message, response.status);
  }

  function renderKeyState() {
    $("#key-state").textContent = apiKey ? "Key set" : keysMode ? "Key needed" : "API key";
    keyButton.classList.toggle("has-key", Boolean(apiKey));
    keyButton.classList.toggle("attention", !apiKey && keysMode);
  }

  function openKeyPanel(open) {
    keyPanel.hidden = !open;
    keyButton.setAttribute("aria-expanded", String(open));
    if (open) { keyInput.value = apiKey; keyInput.focus(); keyInput.select(); }
  }

  function setApiKey(key) {
    apiKey = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) { /* storage disabled: the key lasts as long as the page */ }
    clearThumbnails();
    renderKeyState();
    openKeyPanel(false);
    if (hasQuery()) runSearch();
  }

  keyButton.addEventListener("click", () => openKeyPanel(keyPanel.hidden));
  keyPanel.addEventListener("submit", (event) => { event.preventDefault(); setApiKey(keyInput.value.trim()); });
  $("#key-forget").addEventListener("click", () => { keyInput.value = ""; setApiKey(""); });
  keyPanel.addEventListener("keydown", (e) => { if (e.key === "Escape") { openKeyPanel(false); keyButton.focus(); } });
  document.addEventListener("click", (e) => {
    if (!keyPanel.hidden && !e.target.closest(".key-menu")) openKeyPanel(false);
  });

  // ---- thumbnails ----------------------------------------------------------------------------
  // <img src> cannot carry a header: with a key, a thumbnail is fetched with it and shown from an
  // object URL. The object URLs are kept (by thumbnail URL) for the example chips and later pages,
  // up to a bound, and dropped when the key changes.

  const thumbs = new Map(); // thumbnail URL -> Promise<object URL>
  const MAX_THUMBS = 1500; // above the deepest result list (1,000) plus the examples

  function clearThumbnails() {
    for (const promise of thumbs.values()) promise.then(URL.revokeObjectURL, () => {});
    thumbs.clear();
  }

  function showThumbnail(img, url, onMissing) {
    if (!apiKey) { img.src = url; return; }
    img.dataset.thumb = url;
    let promise = thumbs.get(url);
    if (!promise) {
      promise = api(url).then(async (response) => {
        if (!response.ok) throw await apiError(response);
        return URL.createObjectURL(await response.blob());
      });
      thumbs.set(url, promise);
      promise.catch(() => thumbs.delete(url));
      while (thumbs.size > MAX_THUMBS) {
        const [oldest, old] = thumbs.entries().next().value;
        thumbs.delete(oldest);
        old.then(URL.revokeObjectURL, () => {});
      }
    }
    promise.then((src) => { if (img.dataset.thumb === url) img.src = src; },
      (err) => { img.title = `thumbnail: ${err.message}`; if (onMissing) onMissing(); });
  }

  function rememberCollection(name) {
    if (!name || collections.has(name)) return;
    collections.add(name);
    const option = document.createElement("option");
    option.value = name;
    $("#collections").appendChild(option);
  }

  function fileAsBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error || new Error("could not read the query image"));
      reader.readAsDataURL(file);
    });
  }

  // ---- filters -----------------------------------------------------------------------------
  // Tags, a date range (on created_at, or on taken_at from EXIF) and one declared attribute, as
  // the API's filter language: {tags: {any}, created_at | taken_at: {gte, lt}, attributes: {name: {eq | range}}}.

  const filterPanel = $("#filters");
  const filtersToggle = $("#filters-toggle");
  const filterCount = $("#filter-count");
  const tagsInput = $("#filter-tags");
  const dateField = $("#filter-date-field");
  const dateFrom = $("#filter-from");
  const dateTo = $("#filter-to");
  const attrSelect = $("#filter-attr"); // absent when the API declares no attributes
  const opSelect = $("#filter-op");
  const valueInput = $("#filter-value");
  const boolSelect = $("#filter-bool");
  const minInput = $("#filter-min");
  const maxInput = $("#filter-max");

  // A date input's day, as the instant its local midnight is (plus `days`), in ISO 8601 (UTC).
  function dayStart(value, days = 0) {
    const [y, m, d] = value.split("-").map(Number);
    return new Date(y, m - 1, d + days).toISOString();
  }

  // The day range [from, to] (both inclusive, local days), as {gte, lt}; null when neither is set.
  function dayRange(from, to, what) {
    if (!from && !to) return null;
    if (from && to && from > to) throw new Error(`${what}: the range ends before it starts`);
    const range = {};
    if (from) range.gte = dayStart(from);
    if (to) range.lt = dayStart(to, 1);
    return range;
  }

  const attrType = () => (attrSelect && attrSelect.value
    ? attrSelect.selectedOptions[0].dataset.type : null);

  // The operators and value inputs that fit the chosen attribute's type.
  function renderAttributeInputs() {
    if (!attrSelect) return;
    const type = attrType();
    const canEq = type && type !== "date";
    const canRange = type === "number" || type === "date";
    opSelect.disabled = !type;
    opSelect.querySelector('[value="eq"]').disabled = !canEq;
    opSelect.querySelector('[value="range"]').disabled = !canRange;
    if (type && !canEq) opSelect.value = "range";
    if (type && !canRange) opSelect.value = "eq";
    const range = Boolean(type) && opSelect.value === "range";
    valueInput.hidden = range || type === "boolean";
    valueInput.disabled = !type;
    valueInput.type = type === "number" ? "number" : "text";
    valueInput.step = "any";
    boolSelect.hidden = type !== "boolean" || range;
    for (const input of [minInput, maxInput]) {
      input.hidden = !range;
      input.type = type === "date" ? "date" : "number";
      input.step = "any";
    }
    $("#filter-and").hidden = !range;
  }

  function number(raw, what) {
    const value = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(value)) throw new Error(`${what} is not a number`);
    return value;
  }

  // The attribute condition the inputs describe, or null when they describe none yet.
  function attributeCondition() {
    const type = attrType();
    if (!type) return null;
    const name = attrSelect.value;
    if (opSelect.value === "range") {
      if (type === "date") {
        const range = dayRange(minInput.value, maxInput.value, name);
        return range && { range };
      }
      const range = {};
      if (minInput.value !== "") range.gte = number(minInput.value, `${name} min`);
      if (maxInput.value !== "") range.lte = number(maxInput.value, `${name} max`);
      if (range.gte !== undefined && range.lte !== undefined && range.gte > range.lte) {
        throw new Error(`${name}: the range ends before it starts`);
      }
      return Object.keys(range).length ? { range } : null;
    }
    if (type === "boolean") return { eq: boolSelect.value === "true" };
    const raw = valueInput.value.trim();
    if (!raw) return null;
    return { eq: type === "number" ? number(raw, name) : raw };
  }

  // {filter, parts} from the inputs ({filter: null} without any); throws on an invalid one.
  function readFilter() {
    const filter = {};
    const parts = [];
    const tags = tagsInput.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.length) { filter.tags = { any: tags }; parts.push("tags"); }
    const dates = dayRange(dateFrom.value, dateTo.value, "date");
    if (dates) {
      filter[dateField.value] = dates;
      parts.push(dateField.value === "taken_at" ? "date taken" : "date added");
    }
    const condition = attributeCondition();
    if (condition) { filter.attributes = { [attrSelect.value]: condition }; parts.push(attrSelect.value); }
    return { filter: parts.length ? filter : null, parts };
  }

  function renderFilterCount() {
    let count;
    try { count = readFilter().parts.length; } catch (_) { count = 0; }
    filterCount.textContent = String(count);
    filterCount.hidden = count === 0;
    filtersToggle.classList.toggle("active", count > 0);
    filtersToggle.title = count ? `${plural(count, "filter")} active` : "Filter by tags, date or attribute";
  }

  function showFilters(open) {
    filterPanel.hidden = !open;
    filtersToggle.setAttribute("aria-expanded", String(open));
  }

  function clearFilters() {
    tagsInput.value = "";
    dateFrom.value = dateTo.value = "";
    dateField.value = "created_at";
    if (attrSelect) {
      attrSelect.value = "";
      valueInput.value = minInput.value = maxInput.value = "";
      boolSelect.value = "true";
      renderAttributeInputs();
    }
  }

  filtersToggle.addEventListener("click", () => showFilters(filterPanel.hidden));
  $("#filters-clear").addEventListener("click", () => {
    const had = filterCount.hidden === false;
    clearFilters();
    renderFilterCount();
    if (had && hasQuery()) runSearch();
  });
  const filterInputs = [tagsInput, dateField, dateFrom, dateTo, attrSelect, opSelect, valueInput, boolSelect,
    minInput, maxInput].filter(Boolean);
  for (const input of filterInputs) {
    input.addEventListener("change", () => {
      if (input === attrSelect || input === opSelect) renderAttributeInputs();
      renderFilterCount();
      let filter;
      try { filter = JSON.stringify(readFilter().filter); } catch (_) { filter = "invalid"; } // the search says why
      if (filter !== sentFilter && hasQuery()) runSearch();
    });
  }

  // ---- search ------------------------------------------------------------------------------

  function setImageQuery(query) {
    imageQuery = query;
    const preview = $("#query-image-preview");
    if (preview.dataset.objectUrl) {
      URL.revokeObjectURL(preview.dataset.objectUrl);
      delete preview.dataset.objectUrl;
    }
    if (!query) {
      queryChip.hidden = true;
      queryInput.placeholder = "Describe what you are looking for, or drop an image here";
      return;
    }
    preview.src = preview.dataset.objectUrl = URL.createObjectURL(query.file);
    $("#query-image-name").textContent = query.file.name || "image";
    queryChip.hidden = false;
    queryInput.value = "";
    queryInput.placeholder = "Searching by image; type to search by text instead";
  }

  // {payload, file?, label} to send, {blocked: reason} when the examples alone cannot be searched,
  // or null when there is nothing to search for. `payload` is the JSON body; with `file` (a query
  // image) it lacks the image, which goes as a multipart `file` or, where JSON is needed (filters,
  // later pages), as base64.
  async function buildRequest() {
    const k = Number(kSelect.value);
    const collection = collectionInput.value.trim();
    const cutoff = cutoffToggle.checked;
    const text = queryInput.value.trim();
    const { filter, parts: filterParts } = readFilter();
    sentFilter = JSON.stringify(filter);
    const common = (payload) => {
      payload.mode = mode();
      payload.k = k;
      if (collection) payload.collection = collection;
      if (cutoff) payload.cutoff = "auto";
      if (filter) payload.filter = filter;
      return payload;
    };
    const filtered = filterParts.length ? ` · filtered by ${filterParts.join(", ")}` : "";
    if (examples.length) {
      const positive = [];
      const negative = [];
      const parts = [];
      if (text) { positive.push({ text }); parts.push(`“${text}”`); }
      if (imageQuery) {
        positive.push({ image: await fileAsBase64(imageQuery.file) });
        parts.push(`image “${imageQuery.file.name || "query"}”`);
      }
      for (const example of examples) {
        (example.polarity === "positive" ? positive : negative).push({ image_id: example.imageId });
      }
      const liked = positive.length - parts.length;
      if (liked) parts.push(`more like ${plural(liked, "image")}`);
      if (negative.length) parts.push(`less like ${plural(negative.length, "image")}`);
      if (!positive.length) {
        return { blocked: "Less like what? Type a description or add a “More like this” example; "
          + "negative examples only push results away." };
      }
      return { payload: common({ positive, negative }), label: parts.join(", "), filtered };
    }
    if (imageQuery) {
      return { payload: common({}), file: imageQuery.file, label: `image “${imageQuery.file.name || "query"}”`,
        filtered };
    }
    if (!text) return null;
    return { payload: common({ text }), label: `“${text}”`, filtered };
  }

  // The fetch options for one page of `request`: multipart for a plain search by image (the image
  // as is), JSON otherwise. Multipart carries no filter nor page token, so those go as JSON.
  async function searchOptions(request, pageToken) {
    if (request.file && !pageToken && !request.payload.filter) {
      const body = new FormData();
      body.append("file", request.file, request.file.name || "query.jpg");
      for (const [name, value] of Object.entries(request.payload)) body.append(name, String(value));
      return { method: "POST", body };
    }
    const payload = { ...request.payload };
    if (request.file) {
      request.image = request.image || await fileAsBase64(request.file);
      payload.image = request.image;
    }
    if (pageToken) payload.page_token = pageToken;
    return { method: "POST", body: JSON.stringify(payload), headers: { "Content-Type": "application/json" } };
  }

  function showError(message, status) {
    statusLine.classList.add("error");
    statusLine.textContent = message;
    if (status === 401) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link-button";
      button.id = "enter-key";
      button.textContent = "Enter API key";
      button.addEventListener("click", (e) => { e.stopPropagation(); openKeyPanel(true); });
      statusLine.append(" ", button);
    }
  }

  function setPaging(next) {
    paging = next;
    loadMore.hidden = !(next && next.token);
    loadMore.disabled = false;
    loadMore.textContent = "Load more";
  }

  // Back to the page's first state: no query, no results.
  function resetResults() {
    ++searchSeq; // an answer still on its way is no longer wanted
    searchButton.disabled = false;
    setPaging(null);
    results.replaceChildren();
    statusLine.classList.remove("error");
    statusLine.textContent = "";
    empty.querySelector("p").textContent = emptyText;
    empty.hidden = false;
  }

  function statusText(count, request, body) {
    let line = `${plural(count, "result")} for ${request.label}${request.filtered}`;
    if (body.cutoff) line += ` · ${body.cutoff.kept} of ${body.cutoff.of} kept by the auto cutoff`;
    return `${line} · ${body.mode} mode`;
  }

  async function runSearch() {
    const seq = ++searchSeq;
    setPaging(null); // a new query, filter or mode starts again from its first page
    let request;
    try {
      request = await buildRequest();
    } catch (err) {
      if (seq === searchSeq) showError(`Search failed: ${err.message}`);
      return;
    }
    if (seq !== searchSeq) return;
    if (!request) {
      queryInput.focus();
      return;
    }
    if (request.blocked) {
      showError(request.blocked);
      queryInput.focus();
      return;
    }
    searchButton.disabled = true;
    statusLine.classList.remove("error");
    statusLine.textContent = "Searching…";
    try {
      const response = await api("/v1/search", await searchOptions(request));
      if (seq !== searchSeq) return; // a newer search superseded this one
      if (!response.ok) throw await apiError(response);
      const body = await response.json();
      if (seq !== searchSeq) return;
      renderHits(body.hits, body.calibrated === true, false, Boolean(request.payload.filter));
      setPaging({ seq, request, token: body.next_page_token || null, calibrated: body.calibrated === true,
        shown: new Set(body.hits.map((h) => h.id)), first: body });
      statusLine.textContent = `${statusText(body.hits.length, request, body)} · ${Math.round(body.took_ms)} ms`;
    } catch (err) {
      if (seq !== searchSeq) return;
      showError(`Search failed: ${err.message}`, err.status);
    } finally {
      if (seq === searchSeq) searchButton.disabled = false;
    }
  }

  // The next page of the last search: the same body plus its page_token; the hits are appended.
  async function loadNextPage() {
    const current = paging;
    if (!current || !current.token || current.seq !== searchSeq) return;
    loadMore.disabled = true;
    loadMore.textContent = "Loading…";
    try {
      const response = await api("/v1/search", await searchOptions(current.request, current.token));
      if (paging !== current) return; // a new search started meanwhile
      if (!response.ok) throw await apiError(response);
      const body = await response.json();
      if (paging !== current) return;
      // A page token is a position in the same ranking, so a hit never comes twice; should the
      // index change between pages, a hit already shown is not shown again.
      const fresh = body.hits.filter((h) => !current.shown.has(h.id));
      for (const hit of fresh) current.shown.add(hit.id);
      renderHits(fresh, current.calibrated, true);
      setPaging({ ...current, token: body.next_page_token || null });
      statusLine.classList.remove("error");
      statusLine.textContent = `${statusText(current.shown.size, current.request, current.first)}`
        + ` · ${Math.round(body.took_ms)} ms for the last page`;
    } catch (err) {
      if (paging !== current) return;
      setPaging(current); // the button stays: try again
      showError(`Loading more failed: ${err.message}`, err.status);
    }
  }

  loadMore.addEventListener("click", loadNextPage);

  function renderHits(hits, calibrated, append = false, filtered = false) {
    if (!append) {
      results.replaceChildren();
      empty.hidden = hits.length > 0;
      if (!hits.length) {
        empty.querySelector("p").textContent = filtered
          ? "No matches with these filters. Loosen or clear them (Filters)."
          : "No matches. Try another description, mode or collection.";
      }
    }
    const template = $("#hit-template");
    for (const hit of hits) {
      const card = template.content.firstElementChild.cloneNode(true);
      card.dataset.id = hit.id;
      const img = card.querySelector("img");
      const thumb = card.querySelector(".thumb");
      if (hit.thumbnail_url) {
        img.alt = hit.title || hit.caption || "search result";
        showThumbnail(img, hit.thumbnail_url, () => { img.remove(); thumb.classList.add("missing"); });
      } else {
        img.remove();
        thumb.classList.add("missing");
      }
      const title = card.querySelector(".hit-title");
      if (hit.title) title.textContent = hit.title; else title.remove();
      const caption = card.querySelector(".caption");
      // null: not captioned yet; "": the captioner produced nothing.
      caption.textContent = hit.caption || (hit.caption === null ? "caption pending…" : "no caption");
      caption.classList.toggle("pending", !hit.caption);
      // Relevance is a calibrated probability; without a calibration for the mode it is meaningless.
      const relevance = card.querySelector(".relevance");
      if (calibrated && typeof hit.relevance === "number") {
        relevance.textContent = `${Math.round(hit.relevance * 100)} % relevant`;
        relevance.title = "calibrated chance that this image is relevant to the query";
      } else {
        relevance.remove();
      }
      const score = card.querySelector(".score");
      score.textContent = hit.score.toFixed(3);
      score.title = "raw similarity score (comparable within one mode only)";
      card.querySelector(".collection").textContent = hit.collection;
      card.title = `${[hit.title, hit.caption].filter(Boolean).join("\n") || hit.id}\nclick: more like this`;
      const example = examples.find((e) => e.imageId === hit.id);
      if (example) card.dataset.example = example.polarity;
      rememberCollection(hit.collection);
      const more = () => addExample(hit, "positive");
      card.addEventListener("click", more);
      card.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === card) more(); });
      for (const [selector, polarity] of [[".more", "positive"], [".less", "negative"]]) {
        card.querySelector(selector).addEventListener("click", (e) => {
          e.stopPropagation(); // not also the card's own click
          addExample(hit, polarity);
        });
      }
      results.appendChild(card);
    }
  }

  // ---- examples ("More like this" / "Less like this") ---------------------------------------

  function addExample(hit, polarity) {
    const existing = examples.find((e) => e.imageId === hit.id);
    if (existing && existing.polarity === polarity) return;
    // The text and the query image count as positive examples too.
    const taken = examples.filter((e) => e.polarity === polarity).length
      + (polarity === "positive" ? (queryInput.value.trim() ? 1 : 0) + (imageQuery ? 1 : 0) : 0);
    if (taken >= MAX_EXAMPLES) {
      showError(`At most ${MAX_EXAMPLES} ${polarity} examples; remove one first.`);
      return;
    }
    if (existing) existing.polarity = polarity;
    else examples.push({ imageId: hit.id, polarity, label: hit.title || hit.caption || hit.id, thumb: hit.thumbnail_url });
    renderExamples();
    runSearch();
  }

  function removeExamples(imageIds) {
    for (const id of imageIds) {
      const index = examples.findIndex((e) => e.imageId === id);
      if (index >= 0) examples.splice(index, 1);
    }
    renderExamples();
    if (hasQuery()) runSearch(); else resetResults();
  }

  function renderExamples() {
    exampleList.replaceChildren();
    exampleBar.hidden = examples.length === 0;
    const template = $("#example-template");
    for (const example of examples) {
      const chip = template.content.firstElementChild.cloneNode(true);
      const positive = example.polarity === "positive";
      chip.classList.add(example.polarity);
      chip.dataset.id = example.imageId;
      chip.dataset.polarity = example.polarity;
      chip.title = `${positive ? "more" : "less"} like: ${example.label}`;
      chip.querySelector(".sign").textContent = positive ? "+" : "−";
      const img = chip.querySelector("img");
      if (example.thumb) showThumbnail(img, example.thumb, () => img.remove()); else img.remove();
      chip.querySelector(".example-label").textContent = example.label;
      const close = chip.querySelector(".chip-close");
      close.setAttribute("aria-label", `Remove the example “${example.label}”`);
      close.addEventListener("click", () => removeExamples([example.imageId]));
      exampleList.appendChild(chip);
    }
    for (const card of results.querySelectorAll(".hit")) {
      const example = examples.find((e) => e.imageId === card.dataset.id);
      if (example) card.dataset.example = example.polarity; else delete card.dataset.example;
    }
  }

  $("#examples-clear").addEventListener("click", () => removeExamples(examples.map((e) => e.imageId)));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (queryInput.value.trim()) setImageQuery(null);
    runSearch();
  });
  queryInput.addEventListener("input", () => { if (queryInput.value && imageQuery) setImageQuery(null); });
  $("#query-image-clear").addEventListener("click", () => {
    setImageQuery(null);
    if (examples.length) runSearch();
    queryInput.focus();
  });
  queryFile.addEventListener("change", () => {
    if (queryFile.files.length) { setImageQuery({ file: queryFile.files[0] }); runSearch(); }
    queryFile.value = "";
  });
  for (const input of document.querySelectorAll('input[name="mode"]')) {
    input.addEventListener("change", () => { if (hasQuery()) runSearch(); });
  }
  collectionInput.addEventListener("change", () => { if (hasQuery()) runSearch(); });
  kSelect.addEventListener("change", () => { if (hasQuery()) runSearch(); });
  cutoffToggle.addEventListener("change", () => { if (hasQuery()) runSearch(); });

  // Dropping an image on the search box searches by that image.
  const imageFiles = (dataTransfer) =>
    Array.from((dataTransfer && dataTransfer.files) || []).filter((f) => !f.type || f.type.startsWith("image/"));
  function dropTarget(element, onFiles) {
    element.addEventListener("dragover", (e) => { e.preventDefault(); element.classList.add("dragover"); });
    element.addEventListener("dragleave", () => element.classList.remove("dragover"));
    element.addEventListener("drop", (e) => {
      e.preventDefault();
      e.stopPropagation();
      element.classList.remove("dragover");
      const files = imageFiles(e.dataTransfer);
      if (files.length) onFiles(files);
    });
  }
  dropTarget(queryRow, (files) => { setImageQuery({ file: files[0] }); runSearch(); });
  // Elsewhere, a stray drop must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  // ---- uploads -----------------------------------------------------------------------------

  const BADGE = { uploading: "uploading…", queued: "queued", indexed: "indexed", failed: "failed" };
  const queue = [];
  let active = 0;
  const MAX_PARALLEL = 3;

  function setUploadState(item, status, captionStatus, detail) {
    item.dataset.status = status;
    if (captionStatus) item.dataset.captionStatus = captionStatus; else delete item.dataset.captionStatus;
    let label = BADGE[status] || status;
    if (status === "indexed" && captionStatus === "pending") label = "indexed · captioning";
    item.querySelector(".badge").textContent = label;
    if (detail !== undefined) item.querySelector(".upload-caption").textContent = detail;
  }

  function addUploads(files) {
    const collection = uploadCollection.value.trim();
    for (const file of files) {
      const item = $("#upload-template").content.firstElementChild.cloneNode(true);
      const thumb = item.querySelector(".upload-thumb");
      thumb.src = URL.createObjectURL(file);
      thumb.addEventListener("load", () => URL.revokeObjectURL(thumb.src), { once: true });
      item.querySelector(".upload-name").textContent = file.name || "image";
      setUploadState(item, "uploading", null, collection ? `→ ${collection}` : "");
      uploadList.prepend(item);
      queue.push({ file, collection, item });
    }
    pump();
  }

  function pump() {
    while (active < MAX_PARALLEL && queue.length) {
      const job = queue.shift();
      active += 1;
      upload(job).finally(() => { active -= 1; pump(); });
    }
  }

  async function upload({ file, collection, item }) {
    const body = new FormData();
    body.append("file", file, file.name || "upload.jpg");
    if (collection) body.append("collection", collection);
    try {
      const response = await api("/v1/images", { method: "POST", body });
      if (response.status !== 202) throw await apiError(response);
      const accepted = await response.json();
      item.dataset.id = accepted.id;
      rememberCollection(collection || "default");
      setUploadState(item, accepted.status, "pending", "waiting for a worker…");
      poll(item, accepted.id, 0);
    } catch (err) {
      setUploadState(item, "failed", null, err.message);
      item.title = err.message;
    }
  }

  async function poll(item, id, attempt) {
    let done = false;
    try {
      const response = await api(`/v1/images/${encodeURIComponent(id)}`, { cache: "no-store" });
      if (response.status === 404) {
        setUploadState(item, "failed", null, "deleted");
        return;
      }
      if (response.status === 401 || response.status === 403) {
        // Not transient: polling again would only repeat it; the key button says what to do.
        const err = await apiError(response);
        setUploadState(item, "failed", null, err.message);
        item.title = err.message;
        return;
      }
      if (response.ok) {
        const record = await response.json();
        let detail;
        if (record.status === "failed") detail = record.error || "failed";
        else if (record.caption) detail = record.caption;
        else if (record.caption_status === "done") detail = "indexed; the captioner produced no caption";
        else if (record.caption_status === "failed") detail = "indexed; captioning failed";
        else if (record.status === "indexed") detail = "searchable in image mode; captioning…";
        else detail = "waiting for a worker…";
        setUploadState(item, record.status, record.caption_status, detail);
        item.title = detail;
        done = record.status === "failed" || (record.status === "indexed" && record.caption_status !== "pending");
      }
    } catch (_) { /* transient: poll again */ }
    if (!done) setTimeout(() => poll(item, id, attempt + 1), Math.min(3000, 700 + attempt * 150));
  }

  renderKeyState();
  renderAttributeInputs();
  renderFilterCount();

  uploadInput.addEventListener("change", () => {
    addUploads(Array.from(uploadInput.files));
    uploadInput.value = "";
  });
  dropTarget(dropzone, addUploads);
})();
