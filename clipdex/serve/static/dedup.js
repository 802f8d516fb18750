// clipdex's duplicates page: a group per row, its members side by side, kind and pairwise scores, and the files a
// --keep policy would remove. Plain JS, no build step; it calls GET /api/dedup of `clipdex serve`.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const LIMIT = 20;
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || sessionStorage.getItem("clipdex-token") || "";
  let offset = 0;
  let indexes = [];

  function withToken(url) {
    return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  }

  async function api(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    let res;
    try { res = await fetch(path, { headers }); } catch (e) { throw new Error("cannot reach the server (" + e.message + ")"); }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new Error((body && body.error) || ("HTTP " + res.status));
    return body;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function label(m) {
    let s = m.path || m.source || (m.text || "").slice(0, 60) || String(m.id);
    if (m.t !== undefined && m.t !== null) s += " @ " + Number(m.t).toFixed(1) + "s";
    return s;
  }

  function pairText(p) {
    let s = p.a + " ~ " + p.b + ": " + p.kind + ", clip " + p.clip.toFixed(3);
    if (p.hash_bits !== undefined && p.hash_bits !== null) s += ", hash bits " + p.hash_bits;
    if (p.pixels) s += ", ncc " + p.pixels.ncc.toFixed(3);
    if (p.overlap !== undefined && p.overlap !== null) s += ", overlap " + p.overlap.toFixed(3);
    if (p.contained) s += ", " + p.contained.clip + " at " + p.contained.start.toFixed(1) + "-" +
      p.contained.end.toFixed(1) + "s of " + p.contained.in;
    return s;
  }

  function renderGroup(g) {
    const li = el("li", "group");
    li.dataset.kind = g.kind;
    const head = el("div", "head");
    head.append(el("span", "kind", g.kind), document.createTextNode(g.size + " members"));
    li.append(head);
    const row = el("div", "members");
    for (const m of g.members) {
      const card = el("figure", "member");
      card.dataset.id = m.id;
      if (g.keep !== undefined && g.keep !== null) card.classList.add(m.id === g.keep ? "keep" : "drop");
      if (m.thumbnail) {
        const img = document.createElement("img");
        img.src = withToken(m.thumbnail);
        img.alt = label(m);
        card.append(img);
      }
      const meta = el("figcaption", "meta", label(m));
      if (g.keep !== undefined && g.keep !== null) meta.prepend(el("strong", "", m.id === g.keep ? "keep " : "remove "));
      card.append(meta);
      row.append(card);
    }
    li.append(row);
    const pairs = el("ul", "pairs");
    for (const p of g.pairs) pairs.append(el("li", "pair", pairText(p)));
    li.append(pairs);
    return li;
  }

  function tablesOf(name) {
    const ix = indexes.find((i) => i.name === name) || indexes[0];
    return ix ? Object.keys(ix.tables) : [];
  }

  function fillTables() {
    const sel = $("table");
    sel.textContent = "";
    for (const t of tablesOf($("index").value)) sel.append(new Option(t, t));
    if (params.get("table")) sel.value = params.get("table");
  }

  async function load() {
    $("error").hidden = true;
    $("status").textContent = "Finding duplicates...";
    const q = new URLSearchParams({ index: $("index").value, table: $("table").value,
      kinds: $("kinds").value, k: $("k").value, min_score: $("min-score").value, offset: offset, limit: LIMIT });
    if ($("keep").value) q.set("keep", $("keep").value);
    if ($("rule").value) q.set("rule", $("rule").value);
    let body;
    try {
      body = await api("/api/dedup?" + q.toString());
    } catch (e) {
      $("error").textContent = e.message;
      $("error").hidden = false;
      $("status").textContent = "";
      return;
    }
    const list = $("groups");
    list.textContent = "";
    list.start = offset + 1;
    for (const g of body.groups) list.append(renderGroup(g));
    const s = body.summary;
    $("status").textContent = body.total + " groups (" + s.rows + " rows, " + s.candidates + " candidate pairs, " +
      s.duplicate_pairs + " verified, " + s.rejected_pairs + " rejected)" +
      (body.total ? "; showing " + (offset + 1) + "-" + (offset + body.groups.length) : "");
    $("prev").hidden = offset === 0;
    $("next").hidden = offset + body.groups.length >= body.total;
    const remove = body.groups.flatMap((g) => g.remove || []);
    $("remove-box").hidden = !body.keep;
    $("remove-list").value = remove.join("\n");
  }

  async function start() {
    try {
      indexes = (await api("/api/indexes")).indexes;
    } catch (e) {
      $("error").textContent = e.message;
      $("error").hidden = false;
      return;
    }
    for (const ix of indexes) $("index").append(new Option(ix.name, ix.name));
    if (params.get("index")) $("index").value = params.get("index");
    fillTables();
    $("index").addEventListener("change", fillTables);
    $("dedup-form").addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(); });
    $("prev").addEventListener("click", () => { offset = Math.max(0, offset - LIMIT); load(); });
    $("next").addEventListener("click", () => { offset += LIMIT; load(); });
    if (params.get("run")) load();
  }

  start();
})();
