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
  const searchButton = $("#search-button");
  const statusLine = $("#search-status");
  const results = $("#results");
  const empty = $("#empty");
  const dropzone = $("#dropzone");
  const uploadInput = $("#upload-input");
  const uploadCollection = $("#upload-collection");
  const uploadList = $("#upload-list");
  const collections = new Set();

  // The query is one of: text typed in the box, an image file, or an indexed image ("similar to").
  let imageQuery = null; // {file} | {imageId, label, thumb}
  let searchSeq = 0;

  const mode = () => document.querySelector('input[name="mode"]:checked').value;

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

  // ---- search ------------------------------------------------------------------------------

  function setImageQuery(query) {
    imageQuery = query;
    if (!query) {
      queryChip.hidden = true;
      queryInput.placeholder = "Describe what you are looking for, or drop an image here";
      return;
    }
    const preview = $("#query-image-preview");
    if (preview.dataset.objectUrl) URL.revokeObjectURL(preview.dataset.objectUrl);
    if (query.file) {
      preview.src = preview.dataset.objectUrl = URL.createObjectURL(query.file);
      $("#query-image-name").textContent = query.file.name || "image";
    } else {
      delete preview.dataset.objectUrl;
      preview.src = query.thumb || "";
      $("#query-image-name").textContent = `similar to ${query.label}`;
    }
    queryChip.hidden = false;
    queryInput.value = "";
    queryInput.placeholder = "Searching by image; type to search by text instead";
  }

  function buildRequest() {
    const k = kSelect.value;
    const collection = collectionInput.value.trim();
    if (imageQuery && imageQuery.file) {
      const body = new FormData();
      body.append("file", imageQuery.file, imageQuery.file.name || "query.jpg");
      body.append("mode", mode());
      body.append("k", k);
      if (collection) body.append("collection", collection);
      return { body, label: `image “${imageQuery.file.name || "query"}”` };
    }
    const payload = { mode: mode(), k: Number(k) };
    if (collection) payload.collection = collection;
    if (imageQuery && imageQuery.imageId) {
      payload.image_id = imageQuery.imageId;
    } else {
      const text = queryInput.value.trim();
      if (!text) return null;
      payload.text = text;
    }
    return {
      body: JSON.stringify(payload),
      headers: { "Content-Type": "application/json" },
      label: payload.text ? `“${payload.text}”` : `images similar to ${imageQuery.label}`,
    };
  }

  async function runSearch() {
    const request = buildRequest();
    if (!request) {
      queryInput.focus();
      return;
    }
    const seq = ++searchSeq;
    searchButton.disabled = true;
    statusLine.classList.remove("error");
    statusLine.textContent = "Searching…";
    try {
      const response = await fetch("/v1/search", { method: "POST", body: request.body, headers: request.headers });
      if (seq !== searchSeq) return; // a newer search superseded this one
      if (!response.ok) throw new Error(await apiError(response));
      const body = await response.json();
      renderHits(body.hits);
      const n = body.hits.length;
      statusLine.textContent = `${n} result${n === 1 ? "" : "s"} for ${request.label} · ${body.mode} mode · ${Math.round(body.took_ms)} ms`;
    } catch (err) {
      if (seq !== searchSeq) return;
      statusLine.classList.add("error");
      statusLine.textContent = `Search failed: ${err.message}`;
    } finally {
      if (seq === searchSeq) searchButton.disabled = false;
    }
  }

  function renderHits(hits) {
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
      card.querySelector(".score").textContent = hit.score.toFixed(3);
      card.querySelector(".score").title = "similarity score";
      card.querySelector(".collection").textContent = hit.collection;
      card.title = `${hit.caption || hit.id}\nclick: find similar images`;
      rememberCollection(hit.collection);
      const similar = () => {
        setImageQuery({ imageId: hit.id, label: hit.caption ? `“${hit.caption}”` : "this image", thumb: hit.thumbnail_url });
        runSearch();
      };
      card.addEventListener("click", similar);
      card.addEventListener("keydown", (e) => { if (e.key === "Enter") similar(); });
      results.appendChild(card);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (queryInput.value.trim()) setImageQuery(null);
    runSearch();
  });
  queryInput.addEventListener("input", () => { if (queryInput.value && imageQuery) setImageQuery(null); });
  $("#query-image-clear").addEventListener("click", () => { setImageQuery(null); queryInput.focus(); });
  queryFile.addEventListener("change", () => {
    if (queryFile.files.length) { setImageQuery({ file: queryFile.files[0] }); runSearch(); }
    queryFile.value = "";
  });
  for (const input of document.querySelectorAll('input[name="mode"]')) {
    input.addEventListener("change", () => { if (imageQuery || queryInput.value.trim()) runSearch(); });
  }
  collectionInput.addEventListener("change", () => { if (imageQuery || queryInput.value.trim()) runSearch(); });
  kSelect.addEventListener("change", () => { if (imageQuery || queryInput.value.trim()) runSearch(); });

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
