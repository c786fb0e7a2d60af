/* nkflow review app: the queue's filters and the tube view (boundaries, live numbers, drag
   handles, save with a reason, sign). No framework, no network beyond this app's own origin. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);

  function msg(text, kind) {
    var el = document.getElementById("message");
    el.textContent = text || "";
    el.className = kind || "";
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Nkflow-CSRF": data.csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (doc) { return { ok: r.ok, status: r.status, doc: doc }; },
        function () { return { ok: r.ok, status: r.status, doc: { error: "HTTP " + r.status } }; });
    });
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function row(table, cells, head) {
    var tr = el("tr");
    cells.forEach(function (c) {
      var td = el(head ? "th" : "td");
      if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c === null || c === undefined ? "" : String(c); }
      tr.appendChild(td);
    });
    table.appendChild(tr);
    return tr;
  }

  var login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", function (ev) {
      ev.preventDefault();
      post("/api/login", {
        user: document.getElementById("login-user").value,
        password: document.getElementById("login-password").value
      }).then(function (r) {
        if (r.ok) { location.reload(); } else { msg(r.doc.error, "error"); }
      });
    });
  }
  var logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", function () {
      post("/api/logout", {}).then(function () { location.reload(); });
    });
  }

  if (data.view === "queue") { queueView(); }
  if (data.view === "tube") { tubeView(); }

  function queueView() {
    var attr = { patient_id: "patient", sample_id: "visit", tube: "tube", qc_status: "status",
                 review_status: "review" };
    var filters = Array.prototype.slice.call(document.querySelectorAll("select.filter"));
    function apply() {
      document.querySelectorAll("tr.qrow").forEach(function (tr) {
        var show = filters.every(function (f) {
          return !f.value || tr.dataset[attr[f.dataset.key]] === f.value;
        });
        tr.style.display = show ? "" : "none";
      });
    }
    filters.forEach(function (f) { f.addEventListener("change", apply); });
  }

  function tubeView() {
    var sid = data.sample_id, tube = data.tube;
    var dirty = new Map(), old = new Map();
    var current = data.preview, layout = data.layout, busy = 0;
    function key(b) { return b.gate + "|" + b.marker + "|" + b.side; }
    data.candidate.forEach(function (b) { dirty.set(key(b), b.value); });

    function vkey(gate) { return gate + "|vertices|"; }
    function candidate() {
      var out = [];
      dirty.forEach(function (v, k) {
        var p = k.split("|");
        if (p[1] === "vertices") { out.push({ gate: p[0], vertices: v }); return; }
        out.push({ gate: p[0], marker: p[1], side: p[2], value: v });
      });
      return out;
    }
    function vtext(vs) {
      return vs.map(function (v) { return fmt(v[0]) + " " + fmt(v[1]); }).join("; ");
    }
    function parseVertices(text) {
      var vs = text.split(";").map(function (p) { return p.trim().split(/[\s,]+/).map(Number); });
      var ok = vs.length >= 3 && vs.every(function (v) { return v.length === 2 && isFinite(v[0]) && isFinite(v[1]); });
      return ok ? vs : null;
    }
    function setVertices(poly, vs) {
      var k = vkey(poly.gate);
      if (!old.has(k)) { old.set(k, poly.vertices); }
      dirty.set(k, vs);
      refresh(true);
    }
    function renderPolygons() {
      var t = document.getElementById("polygons");
      t.textContent = "";
      if (!current.polygons.length) { return; }
      row(t, ["polygon", "vertices (x y; x y; ...)", "set by", ""], true);
      current.polygons.forEach(function (poly) {
        var k = vkey(poly.gate);
        var input = el("input", { type: "text", "class": "vertices", id: ("vertices-" + poly.gate).replace(/[^A-Za-z0-9_-]/g, "_"),
                                  "data-key": k, size: "38" });
        input.value = vtext(poly.vertices);
        input.addEventListener("change", function () {
          var vs = parseVertices(input.value);
          if (!vs) { msg("vertices: expected at least 3 'x y' pairs separated by ';'", "error"); return; }
          setVertices(poly, vs);
        });
        var reset = el("button", { type: "button", "class": "reset" }, "fitted");
        reset.disabled = !dirty.has(k);
        reset.addEventListener("click", function () { dirty.delete(k); refresh(true); });
        var tr = row(t, [poly.gate + " (" + poly.markers.join(" / ") + ")", input,
                         dirty.has(k) ? "you (override)" : poly.method, reset]);
        if (dirty.has(k)) { tr.className = "changed"; }
      });
    }
    function fmt(v) { return v === null || v === undefined || v === "" ? "" : Number(v).toFixed(4); }

    function renderBounds() {
      var t = document.getElementById("bounds");
      t.textContent = "";
      row(t, ["gate", "marker", "side", "value", "fitted", "set by", ""], true);
      current.bounds.forEach(function (b) {
        var k = key(b);
        var input = el("input", { type: "number", step: "0.001", "class": "bound",
                                  id: ("bound-" + b.gate + "-" + b.marker + "-" + b.side).replace(/[^A-Za-z0-9_-]/g, "_"),
                                  "data-key": k });
        input.value = fmt(b.value);
        input.addEventListener("change", function () {
          var v = parseFloat(input.value);
          if (!isFinite(v)) { msg("not a number: " + input.value, "error"); return; }
          setBound(b, v);
        });
        var reset = el("button", { type: "button", "class": "reset" }, "fitted");
        reset.disabled = !dirty.has(k);
        reset.addEventListener("click", function () { dirty.delete(k); refresh(true); });
        var tr = row(t, [b.gate, b.marker, b.side, input, fmt(b.fitted),
                         dirty.has(k) ? "you (override)" : b.method, reset]);
        if (dirty.has(k)) { tr.className = "changed"; }
      });
    }

    function setBound(b, v) {
      var k = key(b);
      if (!old.has(k)) { old.set(k, b.value); }
      dirty.set(k, v);
      refresh(true);
    }

    function renderNumbers() {
      var t = document.getElementById("numbers"), e = current.endpoint, v = current.visit;
      t.textContent = "";
      var ci = e.donor_nk_per_ul_lo95 ? " (95 % " + e.donor_nk_per_ul_lo95 + "-" + e.donor_nk_per_ul_hi95 + ")" : "";
      var tr = row(t, ["day-14 verdict of " + data.patient_id, e.verdict + (e.borderline === "true" ? " (borderline)" : "")]);
      tr.id = "num-verdict";
      row(t, ["donor NK/µL (day 14)", (e.donor_nk_per_ul || "n/a") + ci]).id = "num-donor";
      row(t, ["this visit: donor NK/µL", v.donor_nk_per_ul || "n/a"]).id = "num-visit-donor";
      row(t, ["this visit: NK events", v.nk_events]).id = "num-nk-events";
      row(t, ["this visit: NK % of lymphocytes", v.nk_pct_of_lymphocytes]);
      row(t, ["tube QC", current.qc_status]).id = "num-qc";
      if (e.reason) { row(t, ["reason", e.reason]); }
      var p = document.getElementById("populations");
      p.textContent = "";
      row(p, ["population", "parent", "events", "% of parent"], true);
      current.populations.forEach(function (r) {
        row(p, [r.population, r.parent, r.status === "ok" ? r.events : "not computed",
                r.pct_of_parent ? Number(r.pct_of_parent).toFixed(2) : ""]).id = "pop-" + r.population;
      });
      current.flags.forEach(function (f) { row(p, ["flag", f, "", ""]); });
      var rs = document.getElementById("review-state");
      rs.textContent = "Review status: " + (data.review_status || "not recorded") +
        (data.review_note ? " — " + data.review_note : "");
    }

    function renderHandles() {
      var img = document.getElementById("figure"), box = document.getElementById("handles");
      box.textContent = "";
      if (!img.naturalWidth) { return; }
      var s = img.clientWidth / img.naturalWidth;
      current.polygons.forEach(function (poly) {
        var L = layout[poly.gate];
        if (!L || !L.ylim) { return; }
        var bx = L.box;
        function px(v) { return bx[0] + (v[0] - L.xlim[0]) * (bx[2] - 1) / (L.xlim[1] - L.xlim[0]); }
        function py(v) { return bx[1] + (bx[3] - 1) - (v[1] - L.ylim[0]) * (bx[3] - 1) / (L.ylim[1] - L.ylim[0]); }
        poly.vertices.forEach(function (v, j) {
          var x = px(v), y = py(v);
          if (x < bx[0] || x > bx[0] + bx[2] || y < bx[1] || y > bx[1] + bx[3]) { return; }  // off the plot
          var h = el("div", { "class": "handle vertex", title: poly.gate + " vertex " + (j + 1),
                              "data-key": vkey(poly.gate) + j });
          function place(w) { h.style.left = (px(w) * s - 5) + "px"; h.style.top = (py(w) * s - 5) + "px"; }
          place(v);
          var dragging = false, last = v;
          h.addEventListener("pointerdown", function (ev) { dragging = true; h.setPointerCapture(ev.pointerId); ev.preventDefault(); });
          h.addEventListener("pointermove", function (ev) {
            if (!dragging) { return; }
            var r = img.getBoundingClientRect();
            var ix = (ev.clientX - r.left) / s, iy = (ev.clientY - r.top) / s;
            last = [L.xlim[0] + (ix - bx[0]) * (L.xlim[1] - L.xlim[0]) / (bx[2] - 1),
                    L.ylim[0] + (bx[1] + bx[3] - 1 - iy) * (L.ylim[1] - L.ylim[0]) / (bx[3] - 1)];
            place(last);
          });
          h.addEventListener("pointerup", function () {
            if (!dragging) { return; }
            dragging = false;
            var vs = poly.vertices.map(function (w, i) { return i === j ? [Number(last[0].toFixed(4)), Number(last[1].toFixed(4))] : w; });
            setVertices(poly, vs);
          });
          box.appendChild(h);
        });
      });
      current.bounds.forEach(function (b) {
        var L = layout[b.gate];
        if (!L) { return; }
        var axis = L.markers.indexOf(b.marker);
        if (axis < 0 || (axis === 1 && !L.ylim)) { return; }
        var bx = L.box, h = el("div", { "class": "handle " + (axis === 0 ? "vx" : "hy"),
                                          title: b.gate + " " + b.marker + " " + b.side,
                                          "data-key": key(b) });
        function place(v) {
          if (axis === 0) {
            var px = bx[0] + (v - L.xlim[0]) * (bx[2] - 1) / (L.xlim[1] - L.xlim[0]);
            h.style.left = (px * s - 3) + "px"; h.style.top = (bx[1] * s) + "px";
            h.style.height = (bx[3] * s) + "px";
          } else {
            var py = bx[1] + (bx[3] - 1) - (v - L.ylim[0]) * (bx[3] - 1) / (L.ylim[1] - L.ylim[0]);
            h.style.top = (py * s - 3) + "px"; h.style.left = (bx[0] * s) + "px";
            h.style.width = (bx[2] * s) + "px";
          }
        }
        function valueAt(ev) {
          var r = img.getBoundingClientRect();
          if (axis === 0) {
            var x = (ev.clientX - r.left) / s;
            return L.xlim[0] + (x - bx[0]) * (L.xlim[1] - L.xlim[0]) / (bx[2] - 1);
          }
          var y = (ev.clientY - r.top) / s;
          return L.ylim[0] + (bx[1] + bx[3] - 1 - y) * (L.ylim[1] - L.ylim[0]) / (bx[3] - 1);
        }
        place(b.value);
        var dragging = false, last = b.value;
        h.addEventListener("pointerdown", function (ev) { dragging = true; h.setPointerCapture(ev.pointerId); ev.preventDefault(); });
        h.addEventListener("pointermove", function (ev) {
          if (!dragging) { return; }
          last = valueAt(ev); place(last);
          var input = document.querySelector("input.bound[data-key='" + key(b) + "']");
          if (input) { input.value = fmt(last); }
        });
        h.addEventListener("pointerup", function () {
          if (!dragging) { return; }
          dragging = false; setBound(b, Number(last.toFixed(4)));
        });
        box.appendChild(h);
      });
    }

    function refresh(withFigure) {
      var t0 = performance.now(), mine = ++busy;
      return post("/api/preview", { sample_id: sid, tube: tube, bounds: candidate() }).then(function (r) {
        if (mine !== busy) { return; }
        if (!r.ok) { msg(r.doc.error, "error"); return; }
        current = r.doc;
        renderBounds(); renderPolygons(); renderNumbers(); renderHandles();
        document.getElementById("latency").textContent = "recomputed in " +
          Math.round(performance.now() - t0) + " ms (server " + r.doc.elapsed_ms + " ms)";
        document.body.dataset.updated = String(mine);
        if (!withFigure) { return; }
        return post("/api/figure", { sample_id: sid, tube: tube, bounds: candidate() }).then(function (f) {
          if (!f.ok || mine !== busy) { return; }
          layout = f.doc.layout;
          document.getElementById("figure").src = "data:image/png;base64," + f.doc.png;
        });
      });
    }

    document.getElementById("figure").addEventListener("load", renderHandles);
    window.addEventListener("resize", renderHandles);

    function showConflict(doc) {
      var box = document.getElementById("conflict");
      box.textContent = "";
      box.appendChild(el("p", { "class": "error" }, doc.error));
      var t = el("table", { id: "conflict-table" });
      row(t, ["", "gate", "boundary", "by", "when", "reason"], true);
      (doc.yours || []).forEach(function (b) {
        var what = b.vertices ? "vertices " + vtext(b.vertices) : b.marker + " " + b.side + " " + fmt(b.value);
        row(t, ["yours (not saved)", b.gate, what, "", "", document.getElementById("reason").value]);
      });
      (doc.conflicts || []).forEach(function (c) {
        var th = c.theirs;
        if (!th) { row(t, ["on disk now", c.gate, "(removed)", "", "", ""]); return; }
        (th.bounds || []).forEach(function (b) {
          row(t, ["on disk now", c.gate, b.marker + " " + b.side + " " + fmt(b["new"]), th.author, th.time_utc, th.reason]);
        });
        if (th.vertices) {
          row(t, ["on disk now", c.gate, "vertices " + vtext(th.vertices["new"]), th.author, th.time_utc, th.reason]);
        }
      });
      box.appendChild(t);
    }

    document.getElementById("save").addEventListener("click", function () {
      var olds = [];
      old.forEach(function (v, k) {
        var p = k.split("|");
        olds.push(p[1] === "vertices" ? { gate: p[0], vertices: v } : { gate: p[0], marker: p[1], side: p[2], value: v });
      });
      post("/api/save", { sample_id: sid, tube: tube, bounds: candidate(), old: olds,
                          reason: document.getElementById("reason").value, expected: data.expected })
        .then(function (r) {
          if (r.status === 409) { showConflict(r.doc); msg(r.doc.error, "error"); return; }
          if (!r.ok) { msg(r.doc.error, "error"); return; }
          data.expected = r.doc.file_sha;
          document.getElementById("conflict").textContent = "";
          msg("saved: " + r.doc.saved.map(function (s) { return s.gate + " " + s.change; }).join("; ") +
              " — rerun snakemake to apply it", "ok");
        });
    });

    document.getElementById("sign").addEventListener("click", function () {
      var pw = document.getElementById("sign-password");
      post("/api/sign", { patient_id: data.patient_id, meaning: document.getElementById("meaning").value,
                          password: pw.value }).then(function (r) {
        pw.value = "";
        if (!r.ok) { msg(r.doc.error, "error"); return; }
        data.review_status = r.doc.review_status;
        data.review_note = "signed '" + r.doc.meaning + "' by " + r.doc.name + " at " + r.doc.time_utc +
          " (local " + r.doc.time_local + ")";
        renderNumbers();
        msg("signed '" + r.doc.meaning + "' by " + r.doc.name + " at " + r.doc.time_utc + " (local " +
            r.doc.time_local + ")" + (r.doc.pending.length ? "; rerun snakemake to apply the corrections of " +
            r.doc.pending.join(", ") : ""), "ok");
      });
    });

    renderBounds(); renderPolygons(); renderNumbers();
    if (document.getElementById("figure").complete) { renderHandles(); }
  }
})();
