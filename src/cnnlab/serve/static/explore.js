// cnnlab explorable page: every layer of the run's network for the picture drawn or
// uploaded, any unit's arithmetic, the softmax in numbers, saliency overlays and a
// convolution lesson. Plain JavaScript, no libraries; everything comes from this server.
//
// One POST /api/explore per change answers every layer's output (maps as uint8 levels
// with each channel's range); the maps are drawn with putImageData into canvases made
// once. A unit's details come from POST /api/explore/unit when it is clicked.
"use strict";

(() => {
  const LIVE_MS = 120; // while drawing, at most one request per this many milliseconds
  const UPLOAD_SIDE = 1024; // uploads are shrunk to this side before sending

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const pad = $("pad");

  let info = null; // GET /api/explore/model
  let photos = false;
  let answer = null; // the last POST /api/explore answer drawn
  let payload = null; // what produced it: {body, headers}
  let columns = new Map(); // layer id -> {el, kind, tiles, imgs, bars, ...}
  let selected = null; // {layer, c, y, x}
  let version = 0;
  let shownVersion = 0;
  let inFlight = false;
  let again = false;
  let lastSent = 0;
  let inputAt = 0; // performance.now() of the change being answered
  let redraws = 0;
  let unitVersion = 0;

  // ---------- colours ----------
  const VIRIDIS_STOPS = [
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
  ];
  function ramp(stops) {
    const lut = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const t = (i / 255) * (stops.length - 1);
      const a = Math.min(stops.length - 2, Math.floor(t));
      const f = t - a;
      for (let k = 0; k < 3; k++) lut[i * 3 + k] = stops[a][k] * (1 - f) + stops[a + 1][k] * f;
    }
    return lut;
  }
  const VIRIDIS = ramp(VIRIDIS_STOPS);
  // Diverging: blue for negative, white for zero, red for positive.
  const DIVERGING = ramp([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]]);

  function decode(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  const fmt = (v, d = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const sig = (v) => (v === null || v === undefined ? "–" : String(Number(Number(v).toPrecision(6))));

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Draw an H×W grid of values (any numbers) on a canvas of that size, signed (diverging
  // around zero) or on viridis between min and max.
  function paintGrid(canvas, grid, signed) {
    const h = grid.length;
    const w = h ? grid[0].length : 0;
    canvas.width = Math.max(1, w);
    canvas.height = Math.max(1, h);
    const flat = grid.flat().filter((v) => v !== null && Number.isFinite(v));
    const lo = Math.min(...flat, 0);
    const hi = Math.max(...flat, 0);
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    const img = canvas.getContext("2d").createImageData(canvas.width, canvas.height);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = grid[y][x];
        let q = 0;
        if (v === null || !Number.isFinite(v)) q = signed ? 127 : 0;
        else if (signed) q = Math.round(((v / m) * 0.5 + 0.5) * 255);
        else q = hi > lo ? Math.round(((v - lo) / (hi - lo)) * 255) : 0;
        const lut = signed ? DIVERGING : VIRIDIS;
        const o = (y * w + x) * 4;
        img.data[o] = lut[q * 3];
        img.data[o + 1] = lut[q * 3 + 1];
        img.data[o + 2] = lut[q * 3 + 2];
        img.data[o + 3] = 255;
      }
    }
    canvas.getContext("2d").putImageData(img, 0, 0);
  }

  // ---------- pad ----------
  const drawn = cnnlabPad.drawingPad(pad, {
    start() {
      version += 1;
      setSettled();
    },
    move() {
      version += 1;
      setSettled();
      if (!inFlight && performance.now() - lastSent > LIVE_MS) sendPad();
    },
    end() {
      inputAt = performance.now();
      sendPad();
    },
  });

  function clearPad() {
    drawn.clear();
  }

  function setSettled() {
    body.dataset.settled = !inFlight && !again && shownVersion === version ? "1" : "0";
  }

  $("clear").addEventListener("click", () => {
    clearPad();
    version += 1;
    shownVersion = version;
    answer = null;
    payload = null;
    resetView();
    setSettled();
  });

  $("upload").addEventListener("change", async (ev) => {
    const file = ev.target.files && ev.target.files[0];
    ev.target.value = "";
    if (!file) return;
    clearPad();
    const form = new FormData();
    const small = await cnnlabPad.shrunk(file, UPLOAD_SIDE);
    form.append("file", small || file, file.name);
    version += 1;
    inputAt = performance.now();
    request({ body: form, headers: {} }, version, file.name);
  });

  for (const radio of document.querySelectorAll("input[name=saliency]")) {
    radio.addEventListener("change", () => {
      if (!payload) return;
      version += 1;
      inputAt = performance.now();
      request(payload, version, payload.note || "");
    });
  }

  function saliencyMethod() {
    const r = document.querySelector("input[name=saliency]:checked");
    return r ? r.value : "none";
  }

  function sendPad() {
    if (!drawn.dirty) return;
    if (inFlight) {
      again = true;
      setSettled();
      return;
    }
    lastSent = performance.now();
    const v = version;
    inFlight = true;
    setSettled();
    pad.toBlob((blob) => {
      inFlight = false;
      if (blob) request({ body: blob, headers: { "Content-Type": "image/png" } }, v, "");
    }, "image/png");
  }

  async function request(p, v, note) {
    inFlight = true;
    again = false;
    setSettled();
    let res;
    let data = null;
    try {
      res = await fetch(`/api/explore?saliency=${saliencyMethod()}`, {
        method: "POST",
        headers: p.headers,
        body: p.body,
      });
      data = await res.json().catch(() => null);
    } catch (err) {
      showError(`the server did not answer (${err.message})`);
    }
    inFlight = false;
    if (res && !res.ok) {
      showError((data && data.detail) || `request failed (${res.status})`);
      shownVersion = Math.max(shownVersion, v);
    } else if (data && v >= shownVersion) {
      shownVersion = v;
      showError("");
      payload = { ...p, note };
      answer = data;
      draw(data, note);
      const started = inputAt;
      requestAnimationFrame(() => {
        redraws += 1;
        body.dataset.redraws = String(redraws);
        body.dataset.redrawMs = (performance.now() - started).toFixed(2);
        if (selected) showUnit(selected);
        setSettled();
      });
    }
    if (again || (v !== version && drawn.dirty && !drawn.drawing)) {
      again = false;
      sendPad();
    }
    setSettled();
  }

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  // ---------- the overview ----------
  function tileSize(h) {
    if (h <= 8) return 22;
    if (h <= 16) return 26;
    if (h <= 32) return 30;
    return 48;
  }

  function buildOverview() {
    const root = $("overview");
    root.textContent = "";
    columns = new Map();
    const inputCol = el("div", "col");
    const head = el("div", "col-head");
    head.append(el("b", "", "input"), el("br"), el("span", "muted", info.model_input_shape.join("×")));
    inputCol.append(head);
    const cv = el("canvas", "tile input-tile");
    cv.width = info.model_input_shape[2];
    cv.height = info.model_input_shape[1];
    cv.style.width = `${tileSize(cv.height) * 1.5}px`;
    inputCol.append(cv);
    root.append(inputCol);
    columns.set("input", { canvas: cv });
    const lastId = info.layers.length - 1;
    for (const layer of info.layers) {
      const col = el("div", `col kind-${layer.kind}`);
      col.dataset.layer = String(layer.id);
      col.dataset.kind = layer.kind;
      col.dataset.type = layer.type;
      const h = el("div", "col-head");
      h.title = `${layer.type} (layer ${layer.name}) ${layer.params}`;
      h.append(el("b", "", layer.name), el("span", "", ` ${layer.type}`), el("br"));
      if (layer.params) h.append(el("span", "muted small", layer.params), el("br"));
      h.append(el("span", "muted small", `→ ${layer.shape.join("×")}`));
      col.append(h);
      const entry = { layer, el: col };
      if (layer.shape.length === 3) {
        const [c, hh, ww] = layer.shape;
        const n = Math.min(c, info.max_channels);
        const size = tileSize(hh);
        const per = Math.max(1, Math.ceil(Math.sqrt(n / 2)));
        const grid = el("div", "tiles");
        grid.style.gridTemplateColumns = `repeat(${per}, ${size}px)`;
        entry.tiles = [];
        entry.images = [];
        for (let i = 0; i < n; i++) {
          const t = el("canvas", "tile");
          t.width = ww;
          t.height = hh;
          t.style.width = `${size}px`;
          t.style.height = `${Math.round((size * hh) / ww)}px`;
          t.dataset.c = String(i);
          t.title = `map ${i}`;
          t.addEventListener("click", (ev) => {
            const r = t.getBoundingClientRect();
            const x = Math.min(ww - 1, Math.floor(((ev.clientX - r.left) / r.width) * ww));
            const y = Math.min(hh - 1, Math.floor(((ev.clientY - r.top) / r.height) * hh));
            select({ layer: layer.id, c: i, y, x });
          });
          grid.append(t);
          entry.tiles.push(t);
          entry.images.push(t.getContext("2d").createImageData(ww, hh));
        }
        if (c > n) col.append(el("p", "muted small", `first ${n} of ${c} maps`));
        col.append(grid);
      } else if (layer.type === "Flatten") {
        col.append(el("p", "muted small flat", "the maps laid end to end as one vector"));
      } else if (layer.id === lastId && layer.shape[0] === info.classes.length) {
        const list = el("div", "out-bars");
        entry.outRows = info.classes.map((name, i) => {
          const row = el("div", "out-row");
          row.dataset.c = String(i);
          const label = el("span", "out-label", name);
          const track = el("span", "out-track");
          const fill = el("span", "out-fill");
          track.append(fill);
          const value = el("span", "out-value", "");
          row.append(label, track, value);
          row.addEventListener("click", () => select({ layer: layer.id, c: i, y: 0, x: 0 }));
          list.append(row);
          return { row, fill, value };
        });
        col.append(list);
      } else {
        const n = Math.min(layer.shape[0], 4096);
        const cv2 = el("canvas", "bars");
        cv2.width = Math.min(256, Math.max(64, n * 2)); // drawn at 110 px (CSS)
        cv2.height = 120;
        cv2.title = `${n} units: click one`;
        cv2.addEventListener("click", (ev) => {
          const r = cv2.getBoundingClientRect();
          const i = Math.min(n - 1, Math.floor(((ev.clientX - r.left) / r.width) * n));
          select({ layer: layer.id, c: i, y: 0, x: 0 });
        });
        col.append(cv2);
        entry.bars = cv2;
      }
      root.append(col);
      columns.set(layer.id, entry);
    }
  }

  function drawBars(canvas, values, mark) {
    const c = canvas.getContext("2d");
    const w = canvas.width;
    const h = canvas.height;
    c.clearRect(0, 0, w, h);
    const m = Math.max(1e-12, ...values.map(Math.abs));
    const neg = values.some((v) => v < 0);
    const zero = neg ? h / 2 : h - 1;
    const bw = w / values.length;
    for (let i = 0; i < values.length; i++) {
      const v = values[i] / m;
      c.fillStyle = i === mark ? "#e8590c" : v >= 0 ? "#2f6fed" : "#c92a2a";
      const len = v * (neg ? h / 2 : h - 1);
      c.fillRect(i * bw, v >= 0 ? zero - len : zero, Math.max(1, bw - (bw > 2 ? 0.5 : 0)), Math.abs(len));
    }
    c.fillStyle = "#9aa3b5";
    c.fillRect(0, zero, w, 1);
  }

  function paintPicture(canvas, pic) {
    const [ch, h, w] = pic.shape;
    const bytes = decode(pic.data);
    canvas.width = w;
    canvas.height = h;
    const c = canvas.getContext("2d");
    const img = c.createImageData(w, h);
    const n = h * w;
    for (let i = 0; i < n; i++) {
      const o = i * 4;
      if (ch === 3) {
        img.data[o] = bytes[i];
        img.data[o + 1] = bytes[n + i];
        img.data[o + 2] = bytes[2 * n + i];
      } else {
        img.data[o] = img.data[o + 1] = img.data[o + 2] = bytes[i];
      }
      img.data[o + 3] = 255;
    }
    c.putImageData(img, 0, 0);
  }

  const scratch = document.createElement("canvas");

  function draw(data, note) {
    // the input, as the model receives it, and the saliency overlay
    paintPicture(scratch, data.picture);
    paintPicture(columns.get("input").canvas, data.picture);
    drawSeen();
    // every layer
    for (const out of data.layers) {
      const entry = columns.get(out.id);
      if (!entry) continue;
      if (entry.tiles && out.maps) {
        const bytes = decode(out.maps);
        const n = Math.min(entry.tiles.length, out.lo.length);
        for (let i = 0; i < n; i++) {
          const img = entry.images[i];
          const size = img.width * img.height;
          const px = img.data;
          const off = i * size;
          for (let k = 0; k < size; k++) {
            const q = bytes[off + k] * 3;
            const o = k * 4;
            px[o] = VIRIDIS[q];
            px[o + 1] = VIRIDIS[q + 1];
            px[o + 2] = VIRIDIS[q + 2];
            px[o + 3] = 255;
          }
          entry.tiles[i].getContext("2d").putImageData(img, 0, 0);
          entry.tiles[i].title = `map ${i}: ${sig(out.lo[i])} … ${sig(out.hi[i])}`;
        }
      } else if (entry.outRows && out.values) {
        const probs = data.output.probabilities;
        entry.outRows.forEach((r, i) => {
          r.fill.style.width = `${(probs[i] * 100).toFixed(1)}%`;
          r.value.textContent = `${(probs[i] * 100).toFixed(1)}%`;
          r.row.classList.toggle("best", i === data.output.top);
        });
      } else if (entry.bars && out.values) {
        const mark = selected && selected.layer === out.id ? selected.c : -1;
        drawBars(entry.bars, out.values, mark);
      }
    }
    // the answer
    const top = data.output.top;
    $("prediction").textContent = data.blank ? "–" : info.classes[top];
    body.dataset.prediction = data.blank ? "blank" : info.classes[top];
    $("confidence").textContent = data.blank
      ? "blank: no ink found"
      : `${(data.output.probabilities[top] * 100).toFixed(1)}% sure${note ? ` · ${note}` : ""}`;
    const t = data.timing_ms;
    $("timing").textContent = `server ${fmt(t.total, 1)} ms (model ${fmt(t.forward, 1)}, encoding ${fmt(
      t.encode,
      1,
    )}${t.saliency !== undefined ? `, saliency ${fmt(t.saliency, 1)}` : ""})`;
    drawSoftmax(data.output);
    drawLessonInput();
  }

  // The prepared picture upscaled on #seen, the saliency over it and the selected unit's
  // receptive field.
  function drawSeen() {
    const seen = $("seen");
    const c = seen.getContext("2d");
    c.imageSmoothingEnabled = false;
    c.clearRect(0, 0, seen.width, seen.height);
    if (!answer) return;
    c.drawImage(scratch, 0, 0, seen.width, seen.height);
    const sal = answer.saliency;
    const note = $("saliency-note");
    body.dataset.saliency = sal ? sal.method : "none";
    if (sal) {
      const [, h, w] = answer.picture.shape;
      const bytes = decode(sal.data);
      const ov = document.createElement("canvas");
      ov.width = w;
      ov.height = h;
      const img = ov.getContext("2d").createImageData(w, h);
      const m = Math.max(Math.abs(sal.lo), Math.abs(sal.hi)) || 1;
      for (let i = 0; i < w * h; i++) {
        const v = sal.lo + (bytes[i] / 255) * (sal.hi - sal.lo);
        const a = Math.min(1, Math.abs(v) / m);
        const o = i * 4;
        if (sal.signed) {
          img.data[o] = v >= 0 ? 230 : 30;
          img.data[o + 1] = v >= 0 ? 40 : 110;
          img.data[o + 2] = v >= 0 ? 40 : 240;
        } else {
          img.data[o] = 255;
          img.data[o + 1] = Math.round(220 * (1 - a));
          img.data[o + 2] = 0;
        }
        img.data[o + 3] = Math.round(a * 200);
      }
      ov.getContext("2d").putImageData(img, 0, 0);
      c.imageSmoothingEnabled = true;
      c.drawImage(ov, 0, 0, seen.width, seen.height);
      note.textContent =
        sal.method === "gradcam"
          ? `Grad-CAM on layer ${sal.layer} for “${info.classes[answer.output.top]}”: where the last convolution's evidence for it lies (0 … ${sig(sal.hi)}).`
          : `Integrated gradients for “${info.classes[answer.output.top]}” from a black image, ${sal.steps} steps: red pixels raised its logit, blue lowered it (${sig(sal.lo)} … ${sig(sal.hi)}).`;
    } else {
      note.textContent = "";
    }
    if (selectedDetail && selectedDetail.receptive_field) {
      const [top, left, bottom, right] = selectedDetail.receptive_field;
      const [, h, w] = answer.picture.shape;
      c.strokeStyle = "#ff922b";
      c.lineWidth = 2;
      const sx = seen.width / w;
      const sy = seen.height / h;
      c.strokeRect(left * sx + 1, top * sy + 1, (right - left + 1) * sx - 2, (bottom - top + 1) * sy - 2);
    }
  }

  function resetView() {
    for (const entry of columns.values()) {
      if (entry.tiles) for (const t of entry.tiles) t.getContext("2d").clearRect(0, 0, t.width, t.height);
      if (entry.bars) entry.bars.getContext("2d").clearRect(0, 0, entry.bars.width, entry.bars.height);
      if (entry.outRows) for (const r of entry.outRows) { r.fill.style.width = "0"; r.value.textContent = ""; r.row.classList.remove("best"); }
    }
    $("prediction").textContent = "–";
    $("confidence").textContent = photos ? "upload a photo" : "draw a digit";
    $("timing").textContent = "";
    $("seen").getContext("2d").clearRect(0, 0, 280, 280);
    $("softmax").tBodies[0].textContent = "";
    $("softmax-sum").textContent = "";
    $("why").textContent = "";
    $("unit").hidden = true;
    selected = null;
    selectedDetail = null;
    delete body.dataset.prediction;
    drawLessonInput();
  }

  // ---------- the output layer ----------
  function drawSoftmax(out) {
    const tbody = $("softmax").tBodies[0];
    tbody.textContent = "";
    out.classes.forEach((name, i) => {
      const tr = el("tr", i === out.top ? "best" : "");
      tr.dataset.class = name;
      const bar = el("td", "sm-bar");
      const fill = el("span", "sm-fill");
      fill.style.width = `${(out.probabilities[i] * 100).toFixed(1)}%`;
      bar.append(fill);
      tr.append(
        el("td", "", name),
        el("td", "num logit", sig(out.logits[i])),
        el("td", "num", sig(out.exp[i])),
        el("td", "num prob", sig(out.probabilities[i])),
        bar,
      );
      tbody.append(tr);
    });
    $("softmax-sum").textContent = `Σ e^(z − max z) = ${sig(out.exp_sum)} (max z = ${sig(out.max_logit)}); p(“${out.classes[out.top]}”) = ${sig(out.exp[out.top])} / ${sig(out.exp_sum)} = ${sig(out.probabilities[out.top])}`;
    const why = $("why");
    why.textContent = "";
    const a = out.classes[out.top];
    const b = out.classes[out.second];
    why.append(
      el(
        "p",
        "why-line",
        `Why “${a}”: its logit ${sig(out.logits[out.top])} is ${sig(out.margin)} above the runner-up “${b}” (${sig(out.logits[out.second])}), so its probability is e^${sig(out.margin)} = ${sig(Math.exp(out.margin))} times larger.`,
      ),
    );
    if (out.why) {
      const w = out.why;
      const scale = w.scale !== 1 ? ` × ${sig(w.scale)} (the scaling after it)` : "";
      why.append(
        el(
          "p",
          "small",
          `In layer ${w.layer}, the margin is Σ (w_${a} − w_${b})·x + (b_${a} − b_${b})${scale}. Its largest terms:`,
        ),
      );
      const t = el("table", "terms");
      const hr = el("tr");
      for (const hname of ["input", "x", `w_${a}`, `w_${b}`, `(w_${a} − w_${b})·x`]) hr.append(el("th", "", hname));
      t.append(hr);
      for (const term of w.terms) {
        const tr = el("tr");
        tr.append(el("td", "", term.where), el("td", "num", sig(term.x)), el("td", "num", sig(term.w_top)), el("td", "num", sig(term.w_second)), el("td", "num", sig(term.diff)));
        t.append(tr);
      }
      why.append(t);
      why.append(el("p", "small", `+ the other terms ${sig(w.others_sum)} + bias difference ${sig(w.bias_diff)}${scale} = ${sig(w.total)}`));
    }
  }

  // ---------- a unit ----------
  let selectedDetail = null;

  function select(unit) {
    selected = unit;
    for (const entry of columns.values()) {
      if (entry.tiles) entry.tiles.forEach((t) => t.classList.remove("selected"));
      if (entry.outRows) entry.outRows.forEach((r) => r.row.classList.remove("selected"));
    }
    const entry = columns.get(unit.layer);
    if (entry && entry.tiles) entry.tiles[unit.c].classList.add("selected");
    if (entry && entry.outRows) entry.outRows[unit.c].row.classList.add("selected");
    if (entry && entry.bars && answer) {
      const out = answer.layers.find((l) => l.id === unit.layer);
      if (out && out.values) drawBars(entry.bars, out.values, unit.c);
    }
    showUnit(unit);
  }

  function preparedImage() {
    if (!answer) return null;
    const [ch, h, w] = answer.image.shape;
    const bytes = decode(answer.image.data);
    const rows = [];
    for (let y = 0; y < h; y++) {
      const row = [];
      for (let x = 0; x < w; x++) {
        if (ch === 1) row.push(bytes[y * w + x]);
        else row.push([0, 1, 2].map((k) => bytes[k * h * w + y * w + x]));
      }
      rows.push(row);
    }
    return rows;
  }

  async function showUnit(unit) {
    if (!answer) return;
    const v = ++unitVersion;
    body.dataset.unitSettled = "0";
    const q = `layer=${unit.layer}&c=${unit.c}&y=${unit.y}&x=${unit.x}`;
    let data = null;
    try {
      const res = await fetch(`/api/explore/unit?${q}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: preparedImage() }),
      });
      data = await res.json();
      if (!res.ok) {
        showError(data.detail || `unit request failed (${res.status})`);
        data = null;
      }
    } catch (err) {
      showError(`the server did not answer (${err.message})`);
    }
    if (v !== unitVersion) return;
    if (data) renderUnit(data);
    body.dataset.unitSettled = "1";
  }

  // "a + b − c" for a list of numbers
  function signedSum(values) {
    return values
      .map((v, i) => (i === 0 ? sig(v) : v < 0 ? `− ${sig(-v)}` : `+ ${sig(v)}`))
      .join(" ");
  }

  function numberGrid(grid, mark) {
    const t = el("table", "grid-nums");
    grid.forEach((row, y) => {
      const tr = el("tr");
      row.forEach((v, x) => {
        const td = el("td", mark && mark[0] === y && mark[1] === x ? "mark" : "", v === null ? "pad" : fmt(v, 3));
        tr.append(td);
      });
      t.append(tr);
    });
    return t;
  }

  function figure(title, grid, signed, mark) {
    const f = el("div", "fig");
    f.append(el("div", "fig-title", title));
    const cv = el("canvas", "fig-canvas");
    paintGrid(cv, grid, signed);
    f.append(cv, numberGrid(grid, mark));
    return f;
  }

  function renderUnit(d) {
    selectedDetail = d;
    const layer = info.layers[d.id];
    $("unit").hidden = false;
    $("unit").dataset.kind = d.kind;
    $("unit").dataset.layer = String(d.id);
    $("unit").dataset.unit = d.unit.join(",");
    const where = d.unit.length === 3 ? `map ${d.unit[0]} at row ${d.unit[1]}, column ${d.unit[2]}` : `unit ${d.unit[0]}`;
    const cls = d.id === info.layers.length - 1 && layer.shape[0] === info.classes.length ? ` (class “${info.classes[d.unit[0]]}”)` : "";
    $("unit-title").textContent = `${d.type} · layer ${d.name} · ${where}${cls}`;
    $("unit-where").textContent = `${layer.params ? `${layer.params}; ` : ""}input ${layer.input_shape.join("×")} → output ${layer.shape.join("×")}`;
    const [top, left, bottom, right] = d.receptive_field;
    $("unit-rf").textContent = `receptive field: rows ${top}–${bottom}, columns ${left}–${right} (${bottom - top + 1}×${right - left + 1} of the input)`;
    $("unit-rf").dataset.rf = d.receptive_field.join(",");
    drawRf(d.receptive_field);
    drawSeen();
    const parts = $("unit-parts");
    parts.textContent = "";
    const lines = [];
    if (d.kind === "conv") {
      for (const ch of d.channels) {
        const box = el("div", "channel");
        box.append(el("div", "ch-title", `input channel ${ch.channel}: Σ w·x = ${sig(ch.sum)}`));
        const figs = el("div", "figs");
        figs.append(figure("kernel w", ch.kernel, true), figure("input patch x", ch.patch, false));
        box.append(figs);
        parts.append(box);
      }
      const first = d.channels[0];
      if (d.channels.length === 1 && first) {
        const terms = [];
        first.kernel.forEach((row, y) => row.forEach((w, x) => terms.push(`(${fmt(w, 3)})(${fmt(first.patch[y][x], 3)})`)));
        lines.push(`Σ w·x = ${terms.join(" + ")}`);
        lines.push(`      = ${sig(first.sum)}`);
      } else {
        lines.push(`Σ w·x over ${d.in_channels} input channels (${d.kernel_size.join("×")} kernel each):`);
        for (const ch of d.channels) lines.push(`  channel ${ch.channel}: ${sig(ch.sum)}`);
        if (d.channels.length < d.in_channels) lines.push(`  the other ${d.in_channels - d.channels.length} channels: ${sig(d.others_sum)}`);
        lines.push(`  total: ${sig(d.sum)}`);
      }
      lines.push(`+ b = ${sig(d.bias)}`);
    } else if (d.kind === "pool") {
      parts.append(figure(`window (input map ${d.unit[0]}, from row ${d.window_origin[0]}, column ${d.window_origin[1]})`, d.window, false, d.argmax));
      const vals = d.window.flat().map((v) => (v === null ? "pad" : sig(v)));
      lines.push(`${d.formula}: ${d.argmax ? "max" : "mean"}(${vals.join(", ")})`);
    } else if (d.kind === "dense") {
      const t = el("table", "terms");
      const hr = el("tr");
      for (const h of ["input", "w", "x", "w·x"]) hr.append(el("th", "", h));
      t.append(hr);
      for (const term of d.terms) {
        const tr = el("tr");
        tr.append(el("td", "", term.where), el("td", "num", sig(term.w)), el("td", "num", sig(term.x)), el("td", "num", sig(term.wx)));
        t.append(tr);
      }
      parts.append(el("p", "small", `the ${d.terms.length} largest of ${d.in_features} terms w·x:`), t);
      lines.push(`Σ w·x = ${signedSum(d.terms.map((t2) => t2.wx))}`);
      lines.push(`        + the other ${d.others_count} terms (${sig(d.others_sum)}) = ${sig(d.sum)}`);
      lines.push(`+ b = ${sig(d.bias)}`);
    } else if (d.kind === "bn") {
      lines.push(`${d.formula}`);
      lines.push(`  = (${sig(d.x)} − ${sig(d.mean)}) / √(${sig(d.var)} + ${d.eps}) · ${sig(d.gamma)} + ${sig(d.beta)}`);
    } else if (d.kind === "act") {
      lines.push(`${layer.type}: ${d.formula} with z = ${sig(d.z)}`);
    } else {
      lines.push(`${d.type}: ${d.formula}${d.z !== null && d.z !== undefined ? `, input ${sig(d.z)}` : ""}`);
    }
    const math = $("unit-math");
    math.textContent = lines.join("\n") + "\n";
    const result = el("div", "result");
    if (d.z !== undefined && d.z !== null && d.kind !== "act" && d.kind !== "other") {
      result.append(el("span", "", "z = "), el("b", "", ""));
      result.lastChild.id = "unit-z";
      result.lastChild.textContent = sig(d.z);
    }
    result.append(el("span", "", `   the layer's output: `));
    const val = el("b", "", sig(d.value));
    val.id = "unit-value";
    result.append(val);
    if (d.activation) {
      result.append(el("br"), el("span", "", `then ${d.activation.type} (layer ${d.activation.name}): ${d.activation.formula} = `));
      const a = el("b", "", sig(d.activation.value));
      a.id = "unit-activation";
      result.append(a);
    }
    math.append(result);
  }

  function drawRf(rf) {
    const cv = $("rf");
    const c = cv.getContext("2d");
    c.imageSmoothingEnabled = false;
    c.clearRect(0, 0, cv.width, cv.height);
    c.drawImage(scratch, 0, 0, cv.width, cv.height);
    const [, h, w] = answer.picture.shape;
    const sx = cv.width / w;
    const sy = cv.height / h;
    const [top, left, bottom, right] = rf;
    c.fillStyle = "rgba(20, 24, 40, 0.6)";
    c.fillRect(0, 0, cv.width, top * sy);
    c.fillRect(0, (bottom + 1) * sy, cv.width, cv.height - (bottom + 1) * sy);
    c.fillRect(0, top * sy, left * sx, (bottom - top + 1) * sy);
    c.fillRect((right + 1) * sx, top * sy, cv.width - (right + 1) * sx, (bottom - top + 1) * sy);
    c.strokeStyle = "#ff922b";
    c.lineWidth = 2;
    c.strokeRect(left * sx + 1, top * sy + 1, (right - left + 1) * sx - 2, (bottom - top + 1) * sy - 2);
  }

  // ---------- the convolution lesson ----------
  let lessonKernel = [[0, 0, 0], [0, 1, 0], [0, 0, 0]];
  let lessonDisplay = "image";

  function lessonInput() {
    // grey levels 0..1 of the prepared picture, or a sample stroke
    if (answer) {
      const [ch, h, w] = answer.image.shape;
      const bytes = decode(answer.image.data);
      const g = [];
      for (let y = 0; y < h; y++) {
        const row = [];
        for (let x = 0; x < w; x++) {
          let s = 0;
          for (let k = 0; k < ch; k++) s += bytes[k * h * w + y * w + x];
          row.push(s / ch / 255);
        }
        g.push(row);
      }
      return g;
    }
    const n = 16;
    const g = [];
    for (let y = 0; y < n; y++) {
      const row = [];
      for (let x = 0; x < n; x++) row.push((y >= 3 && y <= 4 && x >= 3 && x <= 12) || (x >= 10 && x <= 11 && y >= 3 && y <= 13) ? 1 : 0);
      g.push(row);
    }
    return g;
  }

  // Cross-correlation with zero padding p and stride s, as torch's conv2d computes it.
  function convolve(img, k, s, p) {
    const h = img.length;
    const w = img[0].length;
    const kh = k.length;
    const kw = k[0].length;
    const oh = Math.floor((h + 2 * p - kh) / s) + 1;
    const ow = Math.floor((w + 2 * p - kw) / s) + 1;
    const out = [];
    for (let oy = 0; oy < oh; oy++) {
      const row = [];
      for (let ox = 0; ox < ow; ox++) {
        let acc = 0;
        for (let i = 0; i < kh; i++) {
          const y = oy * s - p + i;
          if (y < 0 || y >= h) continue;
          for (let j = 0; j < kw; j++) {
            const x = ox * s - p + j;
            if (x >= 0 && x < w) acc += k[i][j] * img[y][x];
          }
        }
        row.push(acc);
      }
      out.push(row);
    }
    return out;
  }

  function buildLesson() {
    const sel = $("lesson-kernel");
    for (const k of info.kernels) {
      const o = el("option", "", k.label);
      o.value = k.name;
      sel.append(o);
    }
    const custom = el("option", "", "custom (edited)");
    custom.value = "custom";
    sel.append(custom);
    sel.value = "sobel-x";
    sel.addEventListener("change", () => {
      const k = info.kernels.find((x) => x.name === sel.value);
      if (k) {
        lessonKernel = k.matrix.map((r) => r.slice());
        lessonDisplay = k.display;
        $("lesson-description").textContent = k.description;
      }
      buildGrid();
      runLesson();
    });
    $("lesson-stride").addEventListener("change", runLesson);
    $("lesson-padding").addEventListener("change", runLesson);
    sel.dispatchEvent(new Event("change"));
  }

  function buildGrid() {
    const g = $("lesson-grid");
    g.textContent = "";
    g.style.gridTemplateColumns = `repeat(${lessonKernel[0].length}, 3.6rem)`;
    lessonKernel.forEach((row, i) =>
      row.forEach((v, j) => {
        const inp = el("input", "cell");
        inp.type = "number";
        inp.step = "0.1";
        inp.value = String(Number(v.toFixed(4)));
        inp.dataset.i = String(i);
        inp.dataset.j = String(j);
        inp.addEventListener("input", () => {
          const x = Number(inp.value);
          if (!Number.isFinite(x)) return;
          lessonKernel[i][j] = x;
          $("lesson-kernel").value = "custom";
          lessonDisplay = "signed";
          $("lesson-description").textContent = "your kernel";
          runLesson();
        });
        g.append(inp);
      }),
    );
  }

  function drawLessonInput() {
    if (info) runLesson();
  }

  function runLesson() {
    const img = lessonInput();
    const s = Number($("lesson-stride").value);
    const p = Number($("lesson-padding").value);
    const k = lessonKernel;
    const n = img.length;
    const m = img[0].length;
    const kh = k.length;
    const kw = k[0].length;
    paintGrid($("lesson-input"), img, false);
    $("lesson-in-size").textContent = `${n}×${m}`;
    const formula = (size, kk) => `(${size} + 2·${p} − ${kk}) / ${s} + 1`;
    const oh = Math.floor((n + 2 * p - kh) / s) + 1;
    const ow = Math.floor((m + 2 * p - kw) / s) + 1;
    const sizeText = $("lesson-size");
    if (oh < 1 || ow < 1) {
      sizeText.textContent = `output size = ${formula(n, kh)} < 1: the kernel does not fit`;
      $("lesson-out-size").textContent = "";
      $("lesson-values").textContent = "";
      return;
    }
    const exact = (n + 2 * p - kh) / s;
    const floorNote = Number.isInteger(exact) ? "" : ` (rounded down: ⌊${exact.toFixed(2)}⌋ + 1)`;
    const rows = n === m && kh === kw ? `${formula(n, kh)} = ${oh}${floorNote}` : `rows ${formula(n, kh)} = ${oh}, columns ${formula(m, kw)} = ${ow}`;
    sizeText.textContent = `output size = ${rows} → ${oh}×${ow}`;
    sizeText.dataset.size = `${oh}x${ow}`;
    $("lesson-out-size").textContent = `${oh}×${ow}`;
    const out = convolve(img, k, s, p);
    const signed = lessonDisplay !== "image";
    paintGrid($("lesson-output"), signed ? out : out.map((r) => r.map((v) => Math.min(1, Math.max(0, v)))), signed);
    // the values around the strongest response (a corner of a digit is all zeros)
    let by = 0;
    let bx = 0;
    out.forEach((r, y) => r.forEach((v, x) => { if (Math.abs(v) > Math.abs(out[by][bx])) { by = y; bx = x; } }));
    const y0 = Math.max(0, Math.min(by - 2, oh - 5));
    const x0 = Math.max(0, Math.min(bx - 2, ow - 5));
    const t = $("lesson-values");
    t.textContent = "";
    t.dataset.origin = `${y0},${x0}`;
    $("lesson-values-where").textContent = `from row ${y0}, column ${x0}`;
    for (let y = y0; y < Math.min(y0 + 5, oh); y++) {
      const tr = el("tr");
      for (let x = x0; x < Math.min(x0 + 5, ow); x++) tr.append(el("td", "num", out[y][x].toFixed(3)));
      t.append(tr);
    }
  }

  // ---------- start ----------
  async function start() {
    clearPad();
    try {
      const res = await fetch("/api/explore/model");
      info = await res.json();
    } catch (err) {
      showError(`cannot load the model (${err.message})`);
      return;
    }
    photos = info.preparation && info.preparation.kind === "photos";
    body.dataset.kind = photos ? "photos" : "digits";
    if (photos) {
      pad.hidden = true;
      $("clear").hidden = true;
      $("input-title").textContent = "Upload a photo";
      $("upload-label").textContent = "Upload a photo…";
    }
    $("model-line").textContent = `${info.name} · run ${info.run} · ${info.layers.length} layers · input ${info.model_input_shape.join("×")} · classes ${info.classes.join(", ")}`;
    buildOverview();
    buildLesson();
    resetView();
    body.dataset.model = "loaded";
    body.dataset.redraws = "0";
    setSettled();
  }

  window.cnnlabExplore = { preparedImage, answer: () => answer };
  start();
})();
