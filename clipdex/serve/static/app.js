// clipdex's search page: plain JS, no build step, no external assets. It calls the JSON API of `clipdex serve`.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const PAGE = 30;
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || sessionStorage.getItem("clipdex-token") || "";
  if (params.get("token")) sessionStorage.setItem("clipdex-token", token);

  // state of the current query: the page appends results while `more` is true
  let state = { body: null, image: null, offset: 0, more: false, busy: false, seq: 0 };
  let queryImage = null;   // a File (upload, drop or paste)
  let indexes = [];

  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (token) opts.headers["Authorization"] = "Bearer " + token;
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new Error("cannot reach the server (" + e.message + ")");
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new Error((body && body.error) || ("HTTP " + res.status));
    return body;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function setStatus(text) { $("status").textContent = text; }

  // -- indexes and tables ------------------------------------------------------------------------------------
  async function loadIndexes() {
    const body = await api("/api/indexes");
    indexes = body.indexes;
    const sel = $("index");
    sel.replaceChildren(...indexes.map((ix) => new Option(`${ix.name} (${ix.model})`, ix.name)));
    if (params.get("index")) sel.value = params.get("index");
    fillTables();
    if (params.get("table")) $("table").value = params.get("table");
  }

  function fillTables() {
    const ix = indexes.find((i) => i.name === $("index").value) || indexes[0];
    const tables = ix ? Object.keys(ix.tables) : [];
    $("table").replaceChildren(...tables.map((t) => new Option(`${t} (${ix.tables[t].rows})`, t)));
  }

  // -- the query ---------------------------------------------------------------------------------------------
  function currentBody(extra) {
    const body = { index: $("index").value || null, table: $("table").value || "images" };
    const q = $("q").value.trim();
    if (extra && extra.like_id !== undefined) body.like_id = extra.like_id;
    else if (!queryImage && q) body.text = q;
    const neg = $("negative").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (neg.length) body.negative = neg;
    const where = $("where").value.trim();
    if (where) body.where = where;
    const mode = $("mode").value;
    if (mode && mode !== "auto") body.mode = mode;
    if (body.text !== undefined && body.table !== "videos" && body.table !== "frames") body.explain = true;
    const min = parseFloat($("min-score").value);
    if (min > -1) body.min_score = min;
    return body;
  }

  function reflectInUrl(body) {
    const p = new URLSearchParams();
    if (token && params.get("token")) p.set("token", token);
    if (body.index) p.set("index", body.index);
    if (body.table) p.set("table", body.table);
    if (body.text) p.set("q", body.text);
    if (body.like_id !== undefined) p.set("like", body.like_id);
    if (body.negative) p.set("neg", body.negative.join(", "));
    if (body.where) p.set("where", body.where);
    if (body.mode) p.set("mode", body.mode);
    if (body.min_score !== undefined) p.set("min", body.min_score);
    history.replaceState(null, "", "?" + p.toString());
  }

  let ready = null;     // resolves once the index list is in the selectors: no query leaves before that

  function start(extra) {
    ready.then(() => startNow(extra));
  }

  function startNow(extra) {
    const body = currentBody(extra);
    if (body.text === undefined && body.like_id === undefined && !queryImage) {
      showError("Type a query, or give an image.");
      return;
    }
    showError("");
    state = { body, image: body.like_id === undefined ? queryImage : null, offset: 0, more: true, busy: false,
              seq: state.seq + 1 };
    $("results").replaceChildren();
    $("results").classList.toggle("texts", body.table === "texts");
    reflectInUrl(body);
    loadMore();
  }

  async function loadMore() {
    if (!state.more || state.busy || !state.body) return;
    state.busy = true;
    const seq = state.seq;
    setStatus(state.offset ? "Loading more…" : "Searching…");
    const body = Object.assign({}, state.body, { k: PAGE, offset: state.offset });
    let opts;
    if (state.image) {
      const form = new FormData();
      for (const [k, v] of Object.entries(body)) {
        if (Array.isArray(v)) v.forEach((x) => form.append(k, x));
        else if (v !== null && v !== undefined) form.append(k, String(v));
      }
      form.append("image", state.image, state.image.name || "query.png");
      opts = { method: "POST", body: form };
    } else {
      opts = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    }
    try {
      const res = await api("/api/search", opts);
      if (seq !== state.seq) return;           // a newer query started meanwhile
      res.results.forEach((r) => $("results").appendChild(renderResult(res.index, res.table, r)));
      state.offset += res.results.length;
      state.more = res.results.length === PAGE && state.offset < 10000;
      const n = $("results").children.length;
      setStatus(n ? `${n} result${n === 1 ? "" : "s"}${state.more ? " (scroll for more)" : ""}` : "No results.");
    } catch (e) {
      if (seq !== state.seq) return;
      state.more = false;
      showError(e.message);
      setStatus("");
    } finally {
      if (seq === state.seq) state.busy = false;
    }
    if (state.more && isVisible($("more"))) loadMore();
  }

  function isVisible(el) {
    const r = el.getBoundingClientRect();
    return r.top < window.innerHeight + 200;
  }

  // -- results -----------------------------------------------------------------------------------------------
  function fmtTime(t) {
    const m = Math.floor(t / 60), s = t - 60 * m;
    return `${m}:${s.toFixed(1).padStart(4, "0")}`;
  }

  function renderResult(index, table, r) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.id = r.id;
    if (r.t_best !== undefined && r.t_best !== null) li.dataset.t = r.t_best;
    const label = r.path || r.source || `row ${r.id}`;
    if (r.thumbnail) {
      const img = document.createElement("img");
      img.src = withToken(r.thumbnail);
      img.alt = label;
      img.loading = "lazy";
      li.appendChild(img);
    } else if (r.text !== undefined) {
      const p = document.createElement("p");
      p.className = "snippet";
      p.textContent = r.text;
      li.appendChild(p);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `#${r.rank} · score ${r.score.toFixed(3)}`
      + (r.t_best !== undefined && r.t_best !== null ? ` · at ${fmtTime(r.t_best)}` : "")
      + (r.t !== undefined && r.t !== null ? ` · t ${fmtTime(r.t)}` : "");
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = label + (r.caption ? ` — ${r.caption}` : "");
    meta.append(score, path);
    if (r.matched && r.matched.length) meta.appendChild(matchedWords(r));
    const actions = document.createElement("div");
    actions.className = "actions";
    const like = document.createElement("button");
    like.type = "button";
    like.className = "like";
    like.textContent = "More like this";
    like.setAttribute("aria-label", `More like ${label}`);
    like.addEventListener("click", () => { clearImage(); $("q").value = ""; start({ like_id: r.id }); });
    actions.appendChild(like);
    if (r.file) {
      const isVideo = table === "videos" || table === "frames";
      const open = document.createElement(isVideo ? "button" : "a");
      open.textContent = isVideo ? "Play" : "Open";
      if (isVideo) {
        open.type = "button";
        open.className = "play";
        const t = r.t_best !== undefined && r.t_best !== null ? r.t_best : (r.t || 0);
        open.addEventListener("click", () => play(r.file, t, label));
      } else {
        open.href = withToken(r.file);
        open.target = "_blank";
        open.rel = "noopener";
      }
      actions.appendChild(open);
    }
    meta.appendChild(actions);
    li.appendChild(meta);
    return li;
  }

  // "matched words": the query's words this hit carries, and the text read in its picture with them marked
  function marked(text, words) {
    const out = document.createElement("span");
    const esc = words.filter((w) => w.length > 0).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const parts = esc.length ? text.split(new RegExp(`(${esc.join("|")})`, "gi")) : [text];
    parts.forEach((part, i) => {
      if (i % 2) { const m = document.createElement("mark"); m.textContent = part; out.appendChild(m); }
      else if (part) out.appendChild(document.createTextNode(part));
    });
    return out;
  }

  function matchedWords(r) {
    const box = document.createElement("div");
    box.className = "matched";
    const words = document.createElement("span");
    words.className = "words";
    words.textContent = "matched: ";
    r.matched.forEach((w) => { const m = document.createElement("mark"); m.textContent = w; words.appendChild(m); });
    box.appendChild(words);
    if (r.ocr) {
      const ocr = document.createElement("span");
      ocr.className = "ocr";
      ocr.append("in the picture: ", marked(r.ocr, r.matched));
      box.appendChild(ocr);
    }
    return box;
  }

  function play(file, t, label) {
    const video = $("player-video");
    video.src = withToken(file) + "#t=" + t.toFixed(2);
    $("player-caption").textContent = `${label} from ${fmtTime(t)}`;
    $("player").showModal();
    video.addEventListener("loadedmetadata", () => { video.currentTime = t; video.play().catch(() => {}); },
                           { once: true });
  }

  // -- image queries: upload, drop, paste --------------------------------------------------------------------
  function setImage(file) {
    if (!file || !file.type.startsWith("image/")) {
      showError("That is not an image file.");
      return;
    }
    queryImage = file;
    $("query-image-preview").src = URL.createObjectURL(file);
    $("query-image-label").textContent = `Searching by image: ${file.name || "pasted image"}`;
    $("query-image").hidden = false;
    start();
  }

  function clearImage() {
    queryImage = null;
    $("image").value = "";
    $("query-image").hidden = true;
  }

  // -- wiring ------------------------------------------------------------------------------------------------
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
  $("index").addEventListener("change", () => { fillTables(); });
  $("image").addEventListener("change", () => { if ($("image").files[0]) setImage($("image").files[0]); });
  $("clear-image").addEventListener("click", () => { clearImage(); $("q").focus(); });
  $("min-score").addEventListener("input", () => {
    const v = parseFloat($("min-score").value);
    $("min-score-value").textContent = v > -1 ? v.toFixed(2) : "off";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = Array.from(e.clipboardData.items).find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); setImage(item.getAsFile()); }
  });
  new IntersectionObserver((entries) => { if (entries.some((x) => x.isIntersecting)) loadMore(); })
    .observe($("more"));
  $("player").addEventListener("close", () => $("player-video").pause());

  // -- start: restore a shared query from the URL ------------------------------------------------------------
  $("q").value = params.get("q") || "";          // the shared query's fields, before anyone types
  $("negative").value = params.get("neg") || "";
  $("where").value = params.get("where") || "";
  $("mode").value = params.get("mode") || "auto";
  if (params.get("min")) { $("min-score").value = params.get("min"); $("min-score").dispatchEvent(new Event("input")); }
  ready = loadIndexes().catch((e) => showError("Cannot load the indexes: " + e.message));
  if (params.get("like")) start({ like_id: parseInt(params.get("like"), 10) });
  else if (params.get("q")) start();
})();
