// Boot: wait for the Gradio page to place #ng-root, load the node catalog, build toolbar,
// canvas and side panel, then open the workflow given on the command line (if any).
(function () {
  "use strict";
  const NG = (window.NG = window.NG || {});
  const MAX_UPLOAD_BYTES = 2 * 1024 * 1024;

  function download(filename, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const a = NG.el("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function boot(root) {
    const el = NG.el;
    root.textContent = "";
    root.classList.add("ng-app");
    const catalog = new NG.Catalog(await NG.call("GET", "/api/nodes"));
    const listing = await NG.call("GET", "/api/workflows");
    const graph = new NG.Graph(catalog);

    const picker = el("select", { class: "ng-open", "aria-label": "open a workflow" },
      el("option", { value: "", text: "Open workflow\u2026" }));
    for (const name of listing.workflows) picker.append(el("option", { value: name, text: name }));
    const upload = el("input", { type: "file", accept: ".json,application/json", class: "ng-upload-input" });
    const button = (text, title, action, cls) => el("button", { class: `ng-btn ${cls || ""}`, title, text, onclick: action });
    const status = el("span", { class: "ng-run-status", text: "ready" });
    const toolbar = el("div", { class: "ng-toolbar" });
    const main = el("div", { class: "ng-main" });
    const canvasHost = el("div", { class: "ng-canvas-host" });
    const bar = el("div", { class: "ng-global-bar" });
    const preview = el("img", { class: "ng-preview", alt: "preview" });
    const gallery = el("div", { class: "ng-gallery" });
    const problems = el("ul", { class: "ng-problem-list" });
    const jsonView = el("textarea", { class: "ng-json-view", readonly: "readonly", spellcheck: "false", rows: "14" });
    const side = el("div", { class: "ng-side" },
      el("h4", { text: "Run" }), status, el("div", { class: "ng-global-progress" }, bar), preview,
      el("h4", { text: "Outputs" }), gallery,
      el("h4", { text: "Problems" }), problems,
      el("details", { class: "ng-json-details" }, el("summary", { text: "Workflow JSON" }), jsonView));
    main.append(canvasHost, side);
    root.append(toolbar, main);

    const canvas = new NG.Canvas(canvasHost, graph);
    const runner = new NG.Runner(canvas, { root, status, bar, preview, gallery, problems });
    let fileName = "workflow.json";

    const refreshJson = () => { jsonView.value = JSON.stringify(graph.toJSON(), null, 2); };
    graph.onChange(refreshJson);

    async function openData(data, name) {
      fileName = name || "workflow.json";
      canvas.clearStatus();
      graph.load(data);
      requestAnimationFrame(() => canvas.fit());
      await runner.validate();
    }

    picker.addEventListener("change", async () => {
      if (!picker.value) return;
      try {
        const result = await NG.call("GET", `/api/workflows/${picker.value.split("/").map(encodeURIComponent).join("/")}`);
        await openData(result.workflow, result.name.split("/").pop());
      } catch (err) {
        runner.setStatus(`cannot open ${picker.value}: ${err.message}`, "error");
      }
      picker.value = "";
    });

    upload.addEventListener("change", async () => {
      const file = upload.files[0];
      upload.value = "";
      if (!file) return;
      if (file.size > MAX_UPLOAD_BYTES) { runner.setStatus(`${file.name} is larger than ${MAX_UPLOAD_BYTES} bytes`, "error"); return; }
      const text = await file.text();
      try {
        const checked = await NG.call("POST", "/api/validate", text);  // parsed as data on the server, never run
        await openData(checked.workflow, file.name);
      } catch (err) {
        runner.setStatus(`cannot load ${file.name}: ${err.message}`, "error");
      }
    });

    toolbar.append(
      picker,
      button("Upload", "load a workflow JSON file", () => upload.click()), upload,
      button("Download", "save the graph as workflow JSON", () => download(fileName, JSON.stringify(graph.toJSON(), null, 2) + "\n")),
      button("New", "empty canvas", () => { graph.checkpoint(); openData({ nodes: {} }, "workflow.json"); }),
      el("span", { class: "ng-sep" }),
      button("Add node", "search nodes (or double-click the canvas, or press /)", () => {
        const r = canvasHost.getBoundingClientRect();
        canvas.openPalette(r.left + 60, r.top + 40);
      }, "ng-add"),
      button("Undo", "Ctrl+Z", () => graph.undo()),
      button("Redo", "Ctrl+Shift+Z", () => graph.redo()),
      button("Fit", "fit the graph in view", () => canvas.fit()),
      el("span", { class: "ng-sep" }),
      button("Validate", "check the graph without running", () => runner.validate()),
      button("Run", "validate, then run", () => runner.run(), "ng-run"),
      button("Cancel", "stop the run", () => runner.cancel(), "ng-cancel"),
    );

    NG.app = { graph, canvas, runner, catalog };
    if (listing.initial) await openData(listing.initial.workflow, listing.initial.name);
    else { graph.load({ nodes: {} }); }
    refreshJson();
    root.dataset.ready = "true";
  }

  function start() {
    const root = document.getElementById("ng-root");
    if (!root) { setTimeout(start, 100); return; }
    if (root.dataset.booted) return;
    root.dataset.booted = "true";
    boot(root).catch((err) => { root.textContent = `the editor failed to start: ${err.message}`; });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
