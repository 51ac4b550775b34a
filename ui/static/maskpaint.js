// Image and mask widgets. An input whose x-widget kind is "image" is an image path with an Upload button
// (the file goes to the server's inputs folder through POST /api/inputs). An input of kind "mask" shows the
// image named by its `over` input with a mask painted on it: brush or eraser of a chosen size (in image
// pixels), Clear. The mask lives in a black/white canvas at the image's size; at the end of every stroke it
// is uploaded as a grey PNG (white = repaint) and the input is set to the stored file's path, so the
// workflow names a file and runs headless too. Images are shown through GET /api/image, which reads only
// what a run could read.
(function () {
  "use strict";
  const NG = (window.NG = window.NG || {});
  const OVERLAY = [255, 48, 48];

  async function upload(blob, kind, name) {
    const url = `/api/inputs?kind=${kind}&name=${encodeURIComponent(name || kind)}`;
    const response = await fetch(url, { method: "POST", body: blob, credentials: "same-origin",
      headers: { "Content-Type": blob.type || "application/octet-stream" } });
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) throw new Error((data && data.detail) || `${response.status} ${response.statusText}`);
    return data.path;
  }

  const imageUrl = (path) => `/api/image?path=${encodeURIComponent(path)}`;

  function widgetKind(schema) {
    return ((schema || {})["x-widget"] || {}).kind;
  }

  function refreshMasks(canvas, id) {
    const box = canvas.nodeBox(id);
    if (box) for (const editor of box.querySelectorAll(".ng-mask-editor")) editor.reload();
  }

  function imageWidget(canvas, id, name, value) {
    const el = NG.el;
    const text = el("input", { class: "ng-widget ng-text", type: "text", placeholder: "image path" });
    text.value = typeof value === "string" ? value : "";
    const file = el("input", { type: "file", accept: "image/png,image/jpeg,image/webp", class: "ng-upload-input" });
    const set = (path) => { canvas.graph.setValue(id, name, path || undefined); refreshMasks(canvas, id); };
    text.addEventListener("change", () => set(text.value.trim()));
    file.addEventListener("change", async () => {
      const chosen = file.files[0];
      file.value = "";
      if (!chosen) return;
      try {
        const path = await upload(chosen, "image", chosen.name);
        text.value = path;
        set(path);
      } catch (err) {
        canvas.showToast(`upload failed: ${err.message}`, "error");
      }
    });
    const button = el("button", { class: "ng-btn ng-small", text: "Upload", title: "upload an image into the inputs folder",
      onclick: () => file.click() });
    return el("span", { class: "ng-image-pick" }, text, button, file);
  }

  function maskWidget(canvas, id, name, value, over) {
    const el = NG.el;
    const graph = canvas.graph;
    const state = { tool: "brush", size: 4, painting: false, last: null };
    const picture = el("img", { class: "ng-mask-picture", alt: "image under the mask", draggable: "false" });
    const view = el("canvas", { class: "ng-mask-view", title: "paint the area to repaint" });
    const data = document.createElement("canvas");  // the mask itself: white = repaint, black = keep
    const stage = el("div", { class: "ng-mask-stage" }, picture, view);
    const note = el("div", { class: "ng-mask-note" });
    const tool = (which, text) => el("button", { class: "ng-btn ng-small ng-tool", "data-tool": which, text,
      onclick: () => { state.tool = which; mark(); } });
    const brush = tool("brush", "Brush"), eraser = tool("eraser", "Eraser");
    const size = el("input", { class: "ng-mask-size", type: "range", min: "1", max: "64", step: "1", title: "brush size" });
    const sizeLabel = el("span", { class: "ng-mask-size-label" });
    const clear = el("button", { class: "ng-btn ng-small", text: "Clear", title: "remove the mask (nothing is repainted)",
      onclick: () => { blank(); setPath(undefined); } });
    const path = el("input", { class: "ng-widget ng-text ng-mask-path", type: "text", placeholder: "mask file (painted above)" });
    path.value = typeof value === "string" ? value : "";
    path.addEventListener("change", () => setPath(path.value.trim() || undefined, true));
    const tools = el("div", { class: "ng-mask-tools" }, brush, eraser, size, sizeLabel, clear);
    const editor = el("div", { class: "ng-mask-editor" }, stage, tools, path, note);
    const dctx = data.getContext("2d", { willReadFrequently: true });
    const vctx = view.getContext("2d");

    function mark() {
      brush.classList.toggle("ng-active", state.tool === "brush");
      eraser.classList.toggle("ng-active", state.tool === "eraser");
      sizeLabel.textContent = `${state.size}px`;
      editor.dataset.tool = state.tool;
    }

    function setPath(value, reload) {
      path.value = value || "";
      graph.setValue(id, name, value);
      if (reload) editor.reload();
    }

    function blank() {
      dctx.globalCompositeOperation = "source-over";
      dctx.fillStyle = "#000";
      dctx.fillRect(0, 0, data.width, data.height);
      vctx.clearRect(0, 0, view.width, view.height);
    }

    function showMask() {  // the view: the overlay colour with the mask as its opacity
      const pixels = dctx.getImageData(0, 0, data.width, data.height);
      const shown = vctx.createImageData(data.width, data.height);
      for (let i = 0; i < pixels.data.length; i += 4) {
        shown.data[i] = OVERLAY[0]; shown.data[i + 1] = OVERLAY[1]; shown.data[i + 2] = OVERLAY[2];
        shown.data[i + 3] = pixels.data[i];
      }
      vctx.putImageData(shown, 0, 0);
    }

    editor.reload = () => {
      const source = (graph.nodes[id] || { inputs: {} }).inputs[over];
      editor.dataset.ready = "false";
      if (typeof source !== "string" || !source) {
        stage.classList.add("ng-hidden");
        note.textContent = `set or upload the ${over} first, then paint over it`;
        return;
      }
      stage.classList.remove("ng-hidden");
      note.textContent = "loading\u2026";
      picture.onerror = () => { note.textContent = `cannot show ${source}`; };
      picture.onload = () => {
        const width = picture.naturalWidth, height = picture.naturalHeight;
        for (const c of [data, view]) { c.width = width; c.height = height; }
        size.max = String(Math.max(4, Math.round(Math.max(width, height) / 3)));
        state.size = Math.max(1, Math.round(Math.max(width, height) / 12));
        size.value = String(state.size);
        mark();
        blank();
        const painted = (graph.nodes[id] || { inputs: {} }).inputs[name];
        const done = () => { note.textContent = `${width}x${height}: white = repaint`; editor.dataset.ready = "true"; };
        if (typeof painted !== "string" || !painted) { done(); return; }
        const mask = new Image();
        mask.onload = () => { dctx.drawImage(mask, 0, 0, width, height); showMask(); done(); };
        mask.onerror = () => { note.textContent = `cannot show the mask ${painted}`; editor.dataset.ready = "true"; };
        mask.src = imageUrl(painted);
      };
      picture.src = imageUrl(source);
    };

    function point(event) {
      const r = view.getBoundingClientRect();
      return { x: ((event.clientX - r.left) / r.width) * view.width, y: ((event.clientY - r.top) / r.height) * view.height };
    }

    function stroke(a, b) {
      const erase = state.tool === "eraser";
      const layers = [[dctx, erase ? "#000" : "#fff", "source-over"],
        [vctx, `rgb(${OVERLAY.join(",")})`, erase ? "destination-out" : "source-over"]];
      for (const [ctx, colour, operation] of layers) {
        ctx.globalCompositeOperation = operation;
        ctx.strokeStyle = colour;
        ctx.lineWidth = state.size;
        ctx.lineCap = "round";
        ctx.lineJoin = "round";
        ctx.beginPath();
        ctx.moveTo(a.x, a.y);
        ctx.lineTo(b.x, b.y);
        ctx.stroke();
      }
    }

    function save() {
      editor.dataset.saving = "true";
      data.toBlob(async (blob) => {
        try {
          setPath(await upload(blob, "mask", "mask"));
          note.textContent = `saved ${path.value}`;
        } catch (err) {
          canvas.showToast(`saving the mask failed: ${err.message}`, "error");
        } finally {
          editor.dataset.saving = "false";
        }
      }, "image/png");
    }

    size.addEventListener("input", () => { state.size = parseInt(size.value, 10); mark(); });
    view.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || editor.dataset.ready !== "true") return;
      event.stopPropagation();  // paint, do not drag the node
      event.preventDefault();
      view.setPointerCapture(event.pointerId);
      state.painting = true;
      state.last = point(event);
      stroke(state.last, state.last);
    });
    view.addEventListener("pointermove", (event) => {
      if (!state.painting) return;
      event.stopPropagation();
      const next = point(event);
      stroke(state.last, next);
      state.last = next;
    });
    const finish = () => {
      if (!state.painting) return;
      state.painting = false;
      save();
    };
    view.addEventListener("pointerup", finish);
    view.addEventListener("pointercancel", finish);
    mark();
    editor.reload();
    return editor;
  }

  NG.widgetKind = widgetKind;
  NG.imageWidget = imageWidget;
  NG.maskWidget = maskWidget;
})();
