// imagesearch search page: vanilla JS over the public API (POST /v1/search, POST /v1/images,
// GET /v1/images/<id>). No build step, no dependencies.
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
  const collections = new Set();

  // The query is the text typed in the box or an image file (dropped or chosen). "More like this" /
  // "Less like this" on a result (a click on a result is "More like this") add indexed images as
  // positive or negative examples; while there are any, the text and the image file join them as
  // positive examples and the search goes as {positive, negative}.
  let imageQuery = null; // {file}
  const examples = []; // {imageId, polarity: "positive" | "negative", label, thumb}
  const MAX_EXAMPLES = 8; // per list, as the API allows
  let searchSeq = 0;

  const mode = () => document.querySelector('input[name="mode"]:checked').value;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const hasQuery = () => Boolean(imageQuery || queryInput.value.trim() || examples.length);

  async function apiError(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error.message || body.error.code;
    } catch (_) { /* not JSON */ }
    return `${response.status} ${response.statusText}`;
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

  // {body, headers?, label} to send, {blocked: reason} when the examples alone cannot be searched,
  // or null when there is nothing to search for.
  async function buildRequest() {
    const k = Number(kSelect.value);
    const collection = collectionInput.value.trim();
    const cutoff = cutoffToggle.checked;
    const text = queryInput.value.trim();
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
      const payload = { positive, negative, mode: mode(), k };
      if (collection) payload.collection = collection;
      if (cutoff) payload.cutoff = "auto";
      return { body: JSON.stringify(payload), headers: { "Content-Type": "application/json" }, label: parts.join(", ") };
    }
    if (imageQuery) {
      const body = new FormData();
      body.append("file", imageQuery.file, imageQuery.file.name || "query.jpg");
      body.append("mode", mode());
      body.append("k", String(k));
      if (collection) body.append("collection", collection);
      if (cutoff) body.append("cutoff", "auto");
      return { body, label: `image “${imageQuery.file.name || "query"}”` };
    }
    if (!text) return null;
    const payload = { text, mode: mode(), k };
    if (collection) payload.collection = collection;
    if (cutoff) payload.cutoff = "auto";
    return { body: JSON.stringify(payload), headers: { "Content-Type": "application/json" }, label: `“${text}”` };
  }

  function showError(message) {
    statusLine.classList.add("error");
    statusLine.textContent = message;
  }

  // Back to the page's first state: no query, no results.
  function resetResults() {
    ++searchSeq; // an answer still on its way is no longer wanted
    searchButton.disabled = false;
    results.replaceChildren();
    statusLine.classList.remove("error");
    statusLine.textContent = "";
    empty.querySelector("p").textContent = emptyText;
    empty.hidden = false;
  }

  async function runSearch() {
    const seq = ++searchSeq;
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
      const response = await fetch("/v1/search", { method: "POST", body: request.body, headers: request.headers });
      if (seq !== searchSeq) return; // a newer search superseded this one
      if (!response.ok) throw new Error(await apiError(response));
      const body = await response.json();
      if (seq !== searchSeq) return;
      renderHits(body.hits, body.calibrated === true);
      let line = `${plural(body.hits.length, "result")} for ${request.label}`;
      if (body.cutoff) line += ` · ${body.cutoff.kept} of ${body.cutoff.of} kept by the auto cutoff`;
      statusLine.textContent = `${line} · ${body.mode} mode · ${Math.round(body.took_ms)} ms`;
    } catch (err) {
      if (seq !== searchSeq) return;
      showError(`Search failed: ${err.message}`);
    } finally {
      if (seq === searchSeq) searchButton.disabled = false;
    }
  }

  function renderHits(hits, calibrated) {
    results.replaceChildren();
    empty.hidden = hits.length > 0;
    if (!hits.length) {
      empty.querySelector("p").textContent = "No matches. Try another description, mode or collection.";
    }
    const template = $("#hit-template");
    for (const hit of hits) {
      const card = template.content.firstElementChild.cloneNode(true);
      card.dataset.id = hit.id;
      const img = card.querySelector("img");
      if (hit.thumbnail_url) {
        img.src = hit.thumbnail_url;
        img.alt = hit.caption || "search result";
      } else {
        img.remove();
        card.querySelector(".thumb").classList.add("missing");
      }
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
      card.title = `${hit.caption || hit.id}\nclick: more like this`;
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
    else examples.push({ imageId: hit.id, polarity, label: hit.caption || hit.id, thumb: hit.thumbnail_url });
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
      if (example.thumb) img.src = example.thumb; else img.remove();
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
      const response = await fetch("/v1/images", { method: "POST", body });
      if (response.status !== 202) throw new Error(await apiError(response));
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
      const response = await fetch(`/v1/images/${encodeURIComponent(id)}`, { cache: "no-store" });
      if (response.status === 404) {
        setUploadState(item, "failed", null, "deleted");
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

  uploadInput.addEventListener("change", () => {
    addUploads(Array.from(uploadInput.files));
    uploadInput.value = "";
  });
  dropTarget(dropzone, addUploads);
})();
