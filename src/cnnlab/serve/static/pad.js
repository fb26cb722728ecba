// The drawing pad and the upload shrinking that the drawing page (app.js) and the
// explorable page (explore.js) share. Plain JavaScript, loaded before either page's script.
"use strict";

window.cnnlabPad = (() => {
  // px on the 280×280 pad: about 2 px once the digit is scaled into MNIST's 20 px box
  const STROKE = 20;

  // White strokes on the black canvas `pad`, drawn with a mouse, pen or finger.
  // hooks.start() runs when a stroke begins, hooks.move() after each pointer move's
  // segments are drawn, hooks.end() when the pointer is lifted. The answer's `drawing`
  // says whether a stroke is under way, `dirty` whether the pad holds ink.
  function drawingPad(pad, hooks) {
    const ctx = pad.getContext("2d");
    let drawing = false;
    let dirty = false;
    let last = null;

    function clear() {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, pad.width, pad.height);
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "#fff";
      ctx.lineWidth = STROKE;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      dirty = false;
    }

    function point(ev) {
      const r = pad.getBoundingClientRect();
      return {
        x: ((ev.clientX - r.left) / r.width) * pad.width,
        y: ((ev.clientY - r.top) / r.height) * pad.height,
      };
    }

    pad.addEventListener("pointerdown", (ev) => {
      if (ev.pointerType === "mouse" && ev.button !== 0) return;
      ev.preventDefault();
      pad.setPointerCapture(ev.pointerId);
      drawing = true;
      last = point(ev);
      ctx.beginPath();
      ctx.arc(last.x, last.y, STROKE / 2, 0, Math.PI * 2);
      ctx.fill();
      dirty = true;
      hooks.start();
    });

    pad.addEventListener("pointermove", (ev) => {
      if (!drawing) return;
      ev.preventDefault();
      // every sample since the last event, so fast strokes stay smooth
      const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
      for (const e of events.length ? events : [ev]) {
        const p = point(e);
        ctx.beginPath();
        ctx.moveTo(last.x, last.y);
        ctx.lineTo(p.x, p.y);
        ctx.stroke();
        last = p;
      }
      hooks.move();
    });

    const endStroke = (ev) => {
      if (!drawing) return;
      drawing = false;
      if (pad.hasPointerCapture(ev.pointerId)) pad.releasePointerCapture(ev.pointerId);
      hooks.end();
    };
    pad.addEventListener("pointerup", endStroke);
    pad.addEventListener("pointercancel", endStroke);

    return {
      clear,
      get drawing() {
        return drawing;
      },
      get dirty() {
        return dirty;
      },
    };
  }

  // The file as a PNG no larger than `side` a side, or null to send it as it is
  // (small enough already, or a format this browser cannot decode: the server says why).
  async function shrunk(file, side) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (_) {
      return null;
    }
    const scale = side / Math.max(bitmap.width, bitmap.height);
    if (scale >= 1) {
      bitmap.close();
      return null;
    }
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const c = canvas.getContext("2d");
    c.imageSmoothingQuality = "high";
    c.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  return { STROKE, drawingPad, shrunk };
})();
