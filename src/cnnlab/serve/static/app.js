// cnnlab page: pointer drawing (digit runs) or photo uploads (photo runs), live
// predictions, feature maps, model panel.
// Plain JavaScript, no libraries; everything comes from this server.
"use strict";

(() => {
  const LIVE_MS = 120; // while drawing, at most one request per this many milliseconds
  // Uploads with a longer side over this are shrunk here before sending: a phone photo
  // of a digit then fits the server's pixel and body limits, and nothing is lost, as
  // the model sees 28×28 pixels.
  const UPLOAD_SIDE = 1024;

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const body = document.body;

  let classes = [];
  let photos = false; // a photo run: uploads only, colour input
  let version = 0; // bumps on every change of the canvas
  let inFlight = false;
  let again = false; // a newer drawing waits for the request in flight
  let lastSent = 0;
  let shownVersion = -1;
  let predictions = 0;

  function setSettled() {
    body.dataset.settled = !inFlight && !again && shownVersion === version ? "1" : "0";
  }

  const drawn = cnnlabPad.drawingPad(pad, {
    start() {
      version += 1;
      setSettled();
    },
    move() {
      version += 1;
      setSettled();
      if (!inFlight && performance.now() - lastSent > LIVE_MS) predict();
    },
    end() {
      predict();
    },
  });

  function clearPad() {
    drawn.clear();
    version += 1;
  }

  $("clear").addEventListener("click", () => {
    clearPad();
    again = false;
    shownVersion = version;
    resetResult();
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
    inFlight = true;
    setSettled();
    try {
      await send(form, {}, version, `uploaded ${file.name}`);
    } finally {
      inFlight = false;
      setSettled();
    }
  });

  // A photo of a handwritten number: every digit found is read, left to right.
  $("read-upload").addEventListener("change", async (ev) => {
    const file = ev.target.files && ev.target.files[0];
    ev.target.value = "";
    if (!file) return;
    const form = new FormData();
    const small = await cnnlabPad.shrunk(file, UPLOAD_SIDE);
    form.append("file", small || file, file.name);
    inFlight = true;
    setSettled();
    try {
      await readNumber(form, file.name);
    } finally {
      inFlight = false;
      setSettled();
    }
  });

  async function readNumber(form, name) {
    let res;
    try {
      res = await fetch("/api/read", { method: "POST", body: form });
    } catch (err) {
      showError(`the server did not answer (${err.message})`);
      return;
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      showError((data && data.detail) || `request failed (${res.status})`);
      return;
    }
    showError("");
    showNumber(data, name);
  }

  function showNumber(data, name) {
    const card = $("number-card");
    card.hidden = false;
    const digits = data.digits || [];
    $("number").textContent = data.number || "–";
    body.dataset.number = data.number || "";
    const t = data.timing_ms || {};
    $("number-note").textContent = digits.length
      ? `${digits.length} digit${digits.length > 1 ? "s" : ""} found in ${name}, read left ` +
        `to right · server ${fmt(t.total)} ms. Each is prepared MNIST-style; below, what ` +
        "the model received and its answer."
      : `no digits found in ${name}`;
    const list = $("number-digits");
    list.replaceChildren();
    for (const d of digits) {
      const fig = document.createElement("figure");
      fig.className = "number-digit";
      fig.setAttribute("role", "listitem");
      const canvas = document.createElement("canvas");
      canvas.width = d.input[0].length;
      canvas.height = d.input.length;
      paint(canvas, d.input);
      const cap = document.createElement("figcaption");
      const b = document.createElement("b");
      b.textContent = d.digit;
      cap.append(b, ` ${(d.confidence * 100).toFixed(1)}%`);
      fig.append(canvas, cap);
      list.appendChild(fig);
    }
    card.scrollIntoView({ block: "nearest" });
  }

  function predict() {
    if (!drawn.dirty) return;
    if (inFlight) {
      again = true;
      setSettled();
      return;
    }
    inFlight = true;
    again = false;
    lastSent = performance.now();
    const v = version;
    setSettled();
    pad.toBlob(async (blob) => {
      try {
        if (blob) await send(blob, { "Content-Type": "image/png" }, v, "");
      } finally {
        inFlight = false;
        if (again || (v !== version && !drawn.drawing)) {
          again = false;
          predict();
        }
        setSettled();
      }
    }, "image/png");
  }

  async function send(payload, headers, v, note) {
    let res;
    try {
      res = await fetch("/api/predict?features=1", { method: "POST", headers, body: payload });
    } catch (err) {
      showError(`the server did not answer (${err.message})`);
      return;
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      showError((data && data.detail) || `request failed (${res.status})`);
      shownVersion = v;
      return;
    }
    if (v < shownVersion) return; // an older answer overtaken by a newer one
    shownVersion = v;
    showError("");
    predictions += 1;
    body.dataset.predictions = String(predictions);
    render(data, note);
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = !message;
  }

  // ---- results -----------------------------------------------------------------------

  function buildBars(names) {
    const bars = $("bars");
    bars.replaceChildren();
    const longest = Math.max(1, ...names.map((c) => c.length));
    bars.style.setProperty("--label", longest <= 2 ? "1.4rem" : `${Math.min(longest, 18) + 1}ch`);
    for (const c of names) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.setAttribute("role", "listitem");
      row.dataset.class = c;
      row.innerHTML =
        '<span class="bar-label"></span><span class="bar-track"><span class="bar-fill">' +
        '</span></span><span class="bar-value">–</span>';
      row.querySelector(".bar-label").textContent = c;
      bars.appendChild(row);
    }
  }

  function resetResult() {
    $("prediction").textContent = "–";
    $("confidence").textContent = photos ? "upload a photo" : "draw a digit";
    $("timing").textContent = "";
    for (const row of $("bars").children) {
      row.classList.remove("best");
      row.querySelector(".bar-fill").style.width = "0";
      row.querySelector(".bar-value").textContent = "–";
    }
    const seen = $("input28");
    seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
    $("feature-maps").innerHTML = `<p class="muted">${
      photos ? "Upload a photo" : "Draw a digit"
    } to see every layer respond.</p>`;
    body.dataset.prediction = "";
  }

  function render(data, note) {
    if (data.blank) {
      // No ink reached the model: say so instead of showing a guess.
      resetResult();
      $("confidence").textContent = "blank: no ink found" + (note ? ` · ${note}` : "");
      body.dataset.prediction = "blank";
      drawInput(data.input);
      return;
    }
    const top = data.prediction;
    body.dataset.prediction = top;
    $("prediction").textContent = top;
    $("confidence").textContent =
      `${(data.confidence * 100).toFixed(1)}% sure` + (note ? ` · ${note}` : "");
    const t = data.timing_ms || {};
    $("timing").textContent =
      `model ${fmt(t.inference)} ms · feature maps ${fmt(t.features)} ms · ` +
      `server total ${fmt(t.total)} ms`;
    if (!classes.length) {
      classes = Object.keys(data.probabilities);
      buildBars(classes);
    }
    for (const row of $("bars").children) {
      const p = data.probabilities[row.dataset.class] || 0;
      row.classList.toggle("best", row.dataset.class === top);
      row.querySelector(".bar-fill").style.width = `${(p * 100).toFixed(2)}%`;
      row.querySelector(".bar-value").textContent = `${(p * 100).toFixed(1)}%`;
    }
    drawInput(data.input);
    drawMaps(data.feature_maps || []);
  }

  function fmt(v) {
    return typeof v === "number" ? v.toFixed(1) : "–";
  }

  // The image the model received: rows of grey levels, or rows of [r, g, b] triples.
  function drawInput(rows) {
    const canvas = $("input28");
    const h = rows.length;
    const w = h ? rows[0].length : 0;
    if (!w) return;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      canvas.style.aspectRatio = `${w} / ${h}`;
    }
    paint(canvas, rows);
  }

  // Rows of grey levels (or [r, g, b] triples) painted on a canvas of their size.
  function paint(canvas, rows) {
    const h = rows.length;
    const w = h ? rows[0].length : 0;
    const c = canvas.getContext("2d");
    const img = c.createImageData(w, h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = rows[y][x];
        const i = (y * w + x) * 4;
        if (Array.isArray(v)) {
          img.data[i] = v[0];
          img.data[i + 1] = v[1];
          img.data[i + 2] = v[2];
        } else {
          img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
        }
        img.data[i + 3] = 255;
      }
    }
    c.putImageData(img, 0, 0);
  }

  function drawMaps(layers) {
    const box = $("feature-maps");
    box.replaceChildren();
    if (!layers.length) {
      box.innerHTML = '<p class="muted">This model has no convolution layers.</p>';
      return;
    }
    for (const layer of layers) {
      const section = document.createElement("div");
      section.className = "layer";
      section.dataset.layer = layer.layer;
      const [ch, h, w] = layer.shape;
      const title = document.createElement("h3");
      title.textContent = `conv ${layer.index} · layer ${layer.layer} (${layer.type}) `;
      const dims = document.createElement("span");
      dims.className = "muted";
      const shown = layer.maps.length < ch ? `, first ${layer.maps.length} shown` : "";
      dims.textContent = `${ch} channels of ${h}×${w}${shown}`;
      title.appendChild(dims);
      const tiles = document.createElement("div");
      tiles.className = "tiles";
      layer.maps.forEach((url, i) => {
        const fig = document.createElement("figure");
        fig.className = "tile";
        const img = document.createElement("img");
        img.src = url;
        img.alt = `channel ${i}`;
        const [lo, hi] = layer.ranges[i];
        img.title = `channel ${i}: ${lo} … ${hi}`;
        const cap = document.createElement("figcaption");
        cap.textContent = `${i}`;
        fig.append(img, cap);
        tiles.appendChild(fig);
      });
      section.append(title, tiles);
      box.appendChild(section);
    }
  }

  // ---- model panel -------------------------------------------------------------------

  async function loadModel() {
    let info;
    try {
      const res = await fetch("/api/model");
      info = await res.json();
      if (!res.ok) throw new Error(info.detail || res.status);
    } catch (err) {
      $("model-line").textContent = `cannot load the model description (${err.message})`;
      return;
    }
    const acc = info.test_accuracy == null ? "" : ` · test accuracy ${(info.test_accuracy * 100).toFixed(2)}%`;
    $("model-line").textContent =
      `${info.name} · run ${info.run} · trained on ${info.dataset}${acc}`;
    setKind(info);
    if (!classes.length) {
      classes = info.classes;
      buildBars(classes);
    }
    const facts = [
      ["model", info.name],
      ["parameters", info.parameters.toLocaleString("en")],
      ["input", info.input_size.join("×")],
      ["pictures", info.preparation ? `${info.preparation.kind}, ${info.input_shape.join("×")}` : "digits"],
      ["dataset", info.dataset],
      ["epochs", info.epochs],
    ];
    if (info.test_accuracy != null) facts.push(["test accuracy", `${(info.test_accuracy * 100).toFixed(2)}%`]);
    const box = $("model-facts");
    box.replaceChildren();
    for (const [k, v] of facts) {
      const span = document.createElement("span");
      const b = document.createElement("b");
      b.textContent = `${k}: `;
      span.append(b, String(v));
      box.appendChild(span);
    }
    if (info.description) {
      const d = document.createElement("span");
      d.className = "muted";
      d.textContent = info.description;
      box.appendChild(d);
    }
    const tbody = $("layers").querySelector("tbody");
    tbody.replaceChildren();
    for (const l of info.layers) {
      const tr = document.createElement("tr");
      for (const v of [l.name, l.type, l.output_shape.join("×") || "–", l.parameters.toLocaleString("en")]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    $("summary").textContent = info.summary;
    body.dataset.model = "loaded";
  }

  // A photo run takes uploads only: the drawing pad is hidden and the texts speak of
  // photos and of the colour image the model receives.
  function setKind(info) {
    const prep = info.preparation || { kind: "digits" };
    photos = prep.kind === "photos";
    body.dataset.kind = prep.kind;
    if (!photos) return;
    const [ch, h, w] = info.input_shape;
    document.title = "cnnlab · upload a photo";
    $("tagline").textContent = "· upload a photo, watch the network think";
    $("draw-title").textContent = "Upload a photo";
    pad.hidden = true;
    $("clear").hidden = true;
    $("upload-label").textContent = "Upload a photo…";
    $("draw-hint").textContent =
      "PNG, JPEG, GIF, BMP or WebP. The server prepares it like the run's training " +
      `images (${w}×${h} pixels, resize: ${prep.resize}) and classifies it.`;
    $("seen-caption").textContent =
      `${w}×${h} pixels${ch === 3 ? " in colour" : ", grey"}: decoded and resized ` +
      "like the run's training images.";
    const seen = $("input28");
    seen.width = w;
    seen.height = h;
    seen.style.aspectRatio = `${w} / ${h}`;
    seen.setAttribute("aria-label", `the ${w} by ${h} input image`);
    resetResult();
  }

  clearPad();
  shownVersion = version;
  setSettled();
  loadModel();
})();
