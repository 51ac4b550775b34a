// The canvas: nodes as HTML boxes on a pannable, zoomable world, links as SVG curves.
// Interactions: drag headers to move (the whole selection), drag from an output socket to an input
// to connect, shift-drag the background to box-select, drag the background to pan, wheel to zoom,
// double-click or '/' for the node palette, Delete to remove, Ctrl+Z / Ctrl+Shift+Z to undo / redo,
// Ctrl+B / Ctrl+M to bypass / mute the selection.
(function () {
  "use strict";

  const NG = (window.NG = window.NG || {});

  // How well `query` names node schema `s` (lower is better; null: no match). Names are the display
  // name and the id's part after the namespace ("core/seed" -> "seed").
  NG.matchScore = function (query, s, category) {
    const q = query.trim().toLowerCase();
    const words = q.split(/\s+/).filter(Boolean);
    const names = [s.display_name.toLowerCase(), s.id.split("/").pop().toLowerCase().replace(/_/g, " ")];
    const everything = `${names.join(" ")} ${s.id} ${category} ${s.description || ""}`.toLowerCase();
    if (!words.every((w) => everything.includes(w))) return null;
    if (names.some((n) => n === q)) return 0;
    if (names.some((n) => n.startsWith(q))) return 1;
    if (names.some((n) => n.split(/[\s/_-]+/).some((part) => part.startsWith(words[0])))) return 2;
    if (names.some((n) => words.every((w) => n.includes(w)))) return 3;
    return 4;
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }
  NG.el = el;

  const SVG = "http://www.w3.org/2000/svg";

  function curve(x1, y1, x2, y2) {
    const dx = Math.max(40, Math.abs(x2 - x1) / 2);
    return `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
  }

  function isTyping(event) {
    const t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  class Canvas {
    constructor(root, graph) {
      this.graph = graph;
      this.catalog = graph.catalog;
      this.pan = { x: 0, y: 0 };
      this.scale = 1;
      this.selected = new Set();
      this.selectedLink = null;
      this.status = {};  // node id -> {state, cached, progress:[step,total], images:[urls], problems:[...]}
      this.drag = null;
      this.element = el("div", { class: "ng-canvas", tabindex: "0" });
      this.world = el("div", { class: "ng-world" });
      this.svg = document.createElementNS(SVG, "svg");
      this.svg.setAttribute("class", "ng-links");
      this.world.append(this.svg);
      this.rubber = el("div", { class: "ng-rubber" });
      this.toast = el("div", { class: "ng-toast" });
      this.palette = this.buildPalette();
      this.element.append(this.world, this.rubber, this.palette, this.toast);
      root.append(this.element);
      this.bindEvents();
      // A widget edit is already on screen: redrawing would steal the focus from the next widget.
      graph.onChange((what) => (what === "value" ? this.drawLinks() : this.render()));
      this.applyTransform();
    }

    // coordinates ------------------------------------------------------------------------------
    toWorld(clientX, clientY) {
      const r = this.element.getBoundingClientRect();
      return { x: (clientX - r.left - this.pan.x) / this.scale, y: (clientY - r.top - this.pan.y) / this.scale };
    }

    applyTransform() {
      this.world.style.transform = `translate(${this.pan.x}px, ${this.pan.y}px) scale(${this.scale})`;
      this.element.style.backgroundPosition = `${this.pan.x}px ${this.pan.y}px`;
      this.element.style.backgroundSize = `${24 * this.scale}px ${24 * this.scale}px`;
    }

    zoomAt(clientX, clientY, factor) {
      const r = this.element.getBoundingClientRect();
      const before = this.toWorld(clientX, clientY);
      this.scale = Math.min(2.5, Math.max(0.2, this.scale * factor));
      this.pan.x = clientX - r.left - before.x * this.scale;
      this.pan.y = clientY - r.top - before.y * this.scale;
      this.applyTransform();
    }

    fit() {
      const ids = Object.keys(this.graph.nodes);
      if (!ids.length) { this.pan = { x: 0, y: 0 }; this.scale = 1; this.applyTransform(); return; }
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const id of ids) {
        const [x, y] = this.graph.positions[id];
        const box = this.world.querySelector(`.ng-node[data-id="${CSS.escape(id)}"]`);
        const w = box ? box.offsetWidth : 240, h = box ? box.offsetHeight : 150;
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
      }
      const r = this.element.getBoundingClientRect();
      this.scale = Math.min(1.2, Math.max(0.2, Math.min((r.width - 40) / (x1 - x0), (r.height - 40) / (y1 - y0))));
      this.pan.x = 20 - x0 * this.scale + Math.max(0, (r.width - 40 - (x1 - x0) * this.scale) / 2);
      this.pan.y = 20 - y0 * this.scale;
      this.applyTransform();
    }

    showToast(message, kind) {
      this.toast.textContent = message;
      this.toast.className = `ng-toast ng-show ng-${kind || "info"}`;
      clearTimeout(this.toastTimer);
      this.toastTimer = setTimeout(() => { this.toast.className = "ng-toast"; }, 4000);
    }

    // rendering --------------------------------------------------------------------------------
    render() {
      for (const box of this.world.querySelectorAll(".ng-node")) box.remove();
      for (const id of [...this.selected]) if (!(id in this.graph.nodes)) this.selected.delete(id);
      for (const id of Object.keys(this.graph.nodes)) this.world.append(this.renderNode(id));
      this.drawLinks();
    }

    renderNode(id) {
      const graph = this.graph;
      const node = graph.nodes[id];
      const schema = graph.schemaOf(id);
      const status = this.status[id] || {};
      const [x, y] = graph.positions[id] || [0, 0];
      const box = el("div", { class: "ng-node", "data-id": id, "data-type": node.type });
      box.style.left = `${x}px`;
      box.style.top = `${y}px`;
      if (this.selected.has(id)) box.classList.add("ng-selected");
      if (!schema) box.classList.add("ng-unknown");
      if (node.mode === "bypass" || node.mode === "mute") box.classList.add(`ng-mode-${node.mode}`);
      const title = schema ? schema.display_name : node.type;
      const header = el("div", { class: "ng-header", title: schema ? `${schema.id}\n\n${schema.description}` : `unknown node type ${node.type}` },
        el("span", { class: "ng-title", text: title }), el("span", { class: "ng-id", text: id }),
        el("span", { class: "ng-mode", text: node.mode === "bypass" ? "bypassed" : node.mode === "mute" ? "muted" : "",
          title: node.mode === "bypass" ? "does not run: its outputs pass an input through (Ctrl+B)"
            : node.mode === "mute" ? "does not run, nor what needs it (Ctrl+M)" : "" }),
        el("span", { class: "ng-badge" }));
      if (schema) header.style.borderTopColor = schema.output_node ? "#f5f5f5" : "transparent";
      box.append(header, this.renderListMode(id), el("div", { class: "ng-problems" }));
      const outs = el("div", { class: "ng-outputs" });
      for (const name of graph.outputNames(id)) {
        const type = graph.outputType(id, name);
        const levels = graph.outputLevels(id, name);
        const title = levels.length ? `${levels.join(" of ")} of ${type}` : type;
        const socket = el("span", { class: "ng-socket" + (levels.length ? " ng-socket-list" : ""), "data-kind": "out", "data-node": id, "data-name": name, title });
        socket.style.background = this.catalog.color(type);
        outs.append(el("div", { class: "ng-row ng-out", "data-output": name }, el("span", { class: "ng-label", text: name }), socket));
      }
      box.append(outs);
      const ins = el("div", { class: "ng-inputs" });
      for (const name of graph.inputNames(id)) ins.append(this.renderInput(id, name));
      box.append(ins);
      box.append(el("div", { class: "ng-progress" }, el("div", { class: "ng-progress-bar" })));
      box.append(el("div", { class: "ng-images" }));
      this.applyNodeStatus(box, status);
      return box;
    }

    renderInput(id, name) {
      const graph = this.graph;
      const spec = (graph.schemaOf(id) || { inputs: {} }).inputs[name] || { type: "ANY", widget: false, schema: {} };
      const value = graph.nodes[id].inputs[name];
      const linked = NG.isLink(value);
      const row = el("div", { class: "ng-row ng-in", "data-input": name });
      const title = spec.list_of ? `takes a list of ${spec.list_of}` : spec.type;
      const socket = el("span", { class: "ng-socket" + (spec.list_of ? " ng-socket-list" : ""), "data-kind": "in", "data-node": id, "data-name": name, title });
      socket.style.background = this.catalog.color(spec.type);
      if (spec.widget && !linked) socket.classList.add("ng-socket-widget");
      const label = el("span", { class: "ng-label", text: name + (spec.required && !linked && value === undefined ? " *" : "") });
      row.append(socket, label);
      if (linked) {
        row.classList.add("ng-linked");
        row.append(el("span", { class: "ng-from", text: `\u2190 ${value.from}.${value.output}` }));
      } else if (spec.widget) {
        const kind = NG.widgetKind(spec.schema);
        if (kind === "image") row.append(NG.imageWidget(this, id, name, value));
        else if (kind === "mask") {
          row.classList.add("ng-row-mask");
          row.append(NG.maskWidget(this, id, name, value, spec.schema["x-widget"].over));
        } else row.append(NG.widgetFor(spec.schema || {}, value, (v) => graph.setValue(id, name, v), (msg) => this.showToast(msg, "error")));
      }
      return row;
    }

    // A node that runs once per list element says so; with two or more inputs mapped, it offers the
    // node's list_mode (zip: element i with element i; product: every combination).
    renderListMode(id) {
      const graph = this.graph;
      const levels = graph.nodeLevels(id);
      const row = el("div", { class: "ng-list-mode" });
      if (!levels.length) return row;
      const mapped = Object.entries(graph.nodes[id].inputs).filter(([input, value]) => {
        if (!NG.isLink(value)) return false;
        const rule = graph.linkRule(value.from, value.output, id, input);
        return rule && rule.mapped.length;
      }).length;
      row.append(el("span", { class: "ng-list-badge", text: `runs per ${levels.join(" / ")} element`,
        title: "fed a list where it takes one value: runs once per element; its outputs are lists" }));
      if (mapped > 1) {
        const select = el("select", { class: "ng-widget ng-list-select", title: "how list inputs combine" });
        for (const mode of ["zip", "product"]) select.append(el("option", { value: mode, text: mode }));
        select.value = graph.nodes[id].list_mode || "zip";
        select.addEventListener("change", () => graph.setListMode(id, select.value));
        row.append(select);
      }
      return row;
    }

    applyNodeStatus(box, status) {
      box.classList.toggle("ng-running", status.state === "running");
      box.classList.toggle("ng-done", status.state === "done");
      box.classList.toggle("ng-cached", status.state === "cached");
      box.classList.toggle("ng-failed", status.state === "failed");
      box.classList.toggle("ng-invalid", Boolean(status.problems && status.problems.length));
      box.querySelector(".ng-badge").textContent = status.state === "cached" ? "cached" :
        status.state === "done" && status.seconds !== undefined ? `${status.seconds.toFixed(2)} s` : status.state === "running" ? "running" : "";
      const problems = box.querySelector(".ng-problems");
      problems.replaceChildren(...(status.problems || []).filter((p) => !p.input).map((p) => el("div", { text: p.message })));
      for (const row of box.querySelectorAll(".ng-in")) {
        const mine = (status.problems || []).filter((p) => p.input === row.dataset.input);
        row.classList.toggle("ng-row-invalid", mine.length > 0);
        row.title = mine.map((p) => p.message).join("\n");
        let note = row.querySelector(".ng-row-problem");
        if (note) note.remove();
        if (mine.length) row.append(el("div", { class: "ng-row-problem", text: mine.map((p) => p.message).join("; ") }));
      }
      const bar = box.querySelector(".ng-progress");
      const progress = status.state === "running" ? status.progress : null;
      bar.classList.toggle("ng-show", Boolean(progress));
      if (progress) bar.firstChild.style.width = `${(100 * progress[0]) / Math.max(1, progress[1])}%`;
      const images = box.querySelector(".ng-images");
      const urls = status.images || [];
      if (images.dataset.urls !== urls.join("|")) {
        images.dataset.urls = urls.join("|");
        images.replaceChildren(...urls.map((u) => el("img", { src: u, alt: "output", class: "ng-output-image" })));
      }
    }

    setStatus(id, patch) {
      this.status[id] = Object.assign(this.status[id] || {}, patch);
      const box = this.nodeBox(id);
      if (box) { this.applyNodeStatus(box, this.status[id]); this.drawLinks(); }
    }

    clearStatus(keep) {
      const old = this.status;
      this.status = {};
      for (const id of Object.keys(old)) {
        if (keep) this.status[id] = Object.fromEntries(keep.filter((k) => k in old[id]).map((k) => [k, old[id][k]]));
        const box = this.nodeBox(id);
        if (box) this.applyNodeStatus(box, this.status[id] || {});
      }
      this.drawLinks();
    }

    nodeBox(id) { return this.world.querySelector(`.ng-node[data-id="${CSS.escape(id)}"]`); }

    socketPoint(id, kind, name) {
      const box = this.nodeBox(id);
      if (!box) return null;
      const socket = box.querySelector(`.ng-socket[data-kind="${kind}"][data-name="${CSS.escape(name)}"]`);
      if (!socket) return null;
      const r = socket.getBoundingClientRect();
      return this.toWorld(r.left + r.width / 2, r.top + r.height / 2);
    }

    drawLinks() {
      this.svg.replaceChildren();
      for (const link of this.graph.links()) {
        const a = this.socketPoint(link.from, "out", link.output);
        const b = this.socketPoint(link.to, "in", link.input);
        if (!a || !b) continue;
        const d = curve(a.x, a.y, b.x, b.y);
        const key = `${link.to}\u0000${link.input}`;
        const path = document.createElementNS(SVG, "path");
        path.setAttribute("d", d);
        path.setAttribute("class", "ng-link" + (this.selectedLink === key ? " ng-link-selected" : "") +
          (this.graph.carriesList(link.from, link.output) ? " ng-link-list" : ""));
        path.setAttribute("stroke", this.catalog.color(this.graph.outputType(link.from, link.output)));
        const hit = document.createElementNS(SVG, "path");
        hit.setAttribute("d", d);
        hit.setAttribute("class", "ng-link-hit");
        hit.dataset.to = link.to;
        hit.dataset.input = link.input;
        this.svg.append(path, hit);
      }
      if (this.drag && this.drag.kind === "link" && this.drag.end) {
        const path = document.createElementNS(SVG, "path");
        path.setAttribute("d", curve(this.drag.start.x, this.drag.start.y, this.drag.end.x, this.drag.end.y));
        path.setAttribute("class", "ng-link ng-link-temp");
        path.setAttribute("stroke", this.catalog.color(this.drag.type));
        this.svg.append(path);
      }
    }

    // selection ----------------------------------------------------------------------------------
    select(ids, additive) {
      if (!additive) this.selected.clear();
      for (const id of ids) this.selected.add(id);
      this.selectedLink = null;
      for (const box of this.world.querySelectorAll(".ng-node")) box.classList.toggle("ng-selected", this.selected.has(box.dataset.id));
      this.drawLinks();
    }

    deleteSelection() {
      if (this.selectedLink) {
        const [to, input] = this.selectedLink.split("\u0000");
        this.selectedLink = null;
        this.graph.disconnect(to, input);
      } else if (this.selected.size) {
        this.graph.removeNodes([...this.selected]);
        this.selected.clear();
      }
    }

    // events -------------------------------------------------------------------------------------
    bindEvents() {
      const c = this.element;
      c.addEventListener("pointerdown", (e) => this.onPointerDown(e));
      window.addEventListener("pointermove", (e) => this.onPointerMove(e));
      window.addEventListener("pointerup", (e) => this.onPointerUp(e));
      c.addEventListener("wheel", (e) => {
        if (e.target.closest(".ng-palette")) return;
        e.preventDefault();
        this.zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * 0.0015));
      }, { passive: false });
      c.addEventListener("dblclick", (e) => {
        if (e.target.closest(".ng-node") || e.target.closest(".ng-palette")) return;
        this.openPalette(e.clientX, e.clientY);
      });
      c.addEventListener("keydown", (e) => this.onKey(e));
    }

    onKey(e) {
      if (isTyping(e)) return;
      const ctrl = e.ctrlKey || e.metaKey;
      if (ctrl && e.key.toLowerCase() === "z" && !e.shiftKey) { e.preventDefault(); this.graph.undo(); }
      else if (ctrl && (e.key.toLowerCase() === "y" || (e.key.toLowerCase() === "z" && e.shiftKey))) { e.preventDefault(); this.graph.redo(); }
      else if (ctrl && e.key.toLowerCase() === "a") { e.preventDefault(); this.select(Object.keys(this.graph.nodes)); }
      else if (ctrl && e.key.toLowerCase() === "b") { e.preventDefault(); this.graph.toggleMode([...this.selected], "bypass"); }
      else if (ctrl && e.key.toLowerCase() === "m") { e.preventDefault(); this.graph.toggleMode([...this.selected], "mute"); }
      else if (e.key === "Delete" || e.key === "Backspace") { e.preventDefault(); this.deleteSelection(); }
      else if (e.key === "/" || (e.key === "A" && e.shiftKey)) {
        e.preventDefault();
        const r = this.element.getBoundingClientRect();
        this.openPalette(r.left + r.width / 3, r.top + r.height / 4);
      } else if (e.key === "Escape") this.closePalette();
    }

    onPointerDown(e) {
      if (e.button !== 0 && e.button !== 1) return;
      if (e.target.closest(".ng-palette")) return;
      this.closePalette();
      if (!isTyping(e)) this.element.focus({ preventScroll: true });
      const socket = e.target.closest(".ng-socket");
      if (socket && e.button === 0) {
        e.preventDefault();
        this.startLinkDrag(socket, e);
        return;
      }
      const hit = e.target.closest(".ng-link-hit");
      if (hit) {
        e.preventDefault();
        if (e.altKey) { this.graph.disconnect(hit.dataset.to, hit.dataset.input); return; }
        this.selected.clear();
        this.select([]);
        this.selectedLink = `${hit.dataset.to}\u0000${hit.dataset.input}`;
        this.drawLinks();
        return;
      }
      const box = e.target.closest(".ng-node");
      if (box) {
        if (e.target.closest("input, textarea, select, button")) return;
        const id = box.dataset.id;
        const wasSelected = this.selected.has(id);
        if (e.shiftKey || e.ctrlKey) {
          if (wasSelected) { this.selected.delete(id); this.select([...this.selected]); return; }
          this.select([id], true);
        } else if (!wasSelected) this.select([id]);
        e.preventDefault();
        // A click (no drag) on a node of a multi-selection narrows the selection to it.
        this.drag = { kind: "move", last: this.toWorld(e.clientX, e.clientY), moved: false,
          narrowTo: wasSelected && !e.shiftKey && !e.ctrlKey ? id : null };
        return;
      }
      e.preventDefault();
      if (e.shiftKey) {
        this.drag = { kind: "box", start: { x: e.clientX, y: e.clientY }, additive: true };
      } else {
        this.drag = { kind: "pan", start: { x: e.clientX, y: e.clientY }, pan: { ...this.pan }, moved: false };
      }
    }

    startLinkDrag(socket, e) {
      let from = socket.dataset.node, name = socket.dataset.name;
      if (socket.dataset.kind === "in") {
        const value = this.graph.nodes[from].inputs[name];
        if (!NG.isLink(value)) return;  // an unlinked input: nothing to pick up
        this.graph.disconnect(from, name);  // pick the link up from its input
        from = value.from;
        name = value.output;
      }
      this.drag = { kind: "link", from, output: name, type: this.graph.outputType(from, name),
        start: this.socketPoint(from, "out", name), end: this.toWorld(e.clientX, e.clientY) };
      this.element.classList.add("ng-linking");
      this.drawLinks();
    }

    onPointerMove(e) {
      const d = this.drag;
      if (!d) return;
      if (d.kind === "pan") {
        d.moved = d.moved || Math.abs(e.clientX - d.start.x) + Math.abs(e.clientY - d.start.y) > 3;
        this.pan.x = d.pan.x + e.clientX - d.start.x;
        this.pan.y = d.pan.y + e.clientY - d.start.y;
        this.applyTransform();
      } else if (d.kind === "move") {
        const p = this.toWorld(e.clientX, e.clientY);
        if (!d.moved) { this.graph.checkpoint(); d.moved = true; }
        this.graph.moveNodes([...this.selected], p.x - d.last.x, p.y - d.last.y);
        d.last = p;
        for (const id of this.selected) {
          const box = this.nodeBox(id);
          const [x, y] = this.graph.positions[id];
          if (box) { box.style.left = `${x}px`; box.style.top = `${y}px`; }
        }
        this.drawLinks();
      } else if (d.kind === "link") {
        d.end = this.toWorld(e.clientX, e.clientY);
        this.drawLinks();
      } else if (d.kind === "box") {
        const r = this.element.getBoundingClientRect();
        const x0 = Math.min(d.start.x, e.clientX), y0 = Math.min(d.start.y, e.clientY);
        Object.assign(this.rubber.style, { display: "block", left: `${x0 - r.left}px`, top: `${y0 - r.top}px`,
          width: `${Math.abs(e.clientX - d.start.x)}px`, height: `${Math.abs(e.clientY - d.start.y)}px` });
        d.end = { x: e.clientX, y: e.clientY };
      }
    }

    onPointerUp(e) {
      const d = this.drag;
      if (!d) return;
      this.drag = null;
      if (d.kind === "pan" && !d.moved) { this.select([]); }
      else if (d.kind === "move" && d.moved) { this.graph.changed("move"); }
      else if (d.kind === "move" && d.narrowTo) { this.select([d.narrowTo]); }
      else if (d.kind === "link") {
        this.element.classList.remove("ng-linking");
        const target = document.elementFromPoint(e.clientX, e.clientY);
        const row = target && target.closest(".ng-in");
        if (row) {
          const to = row.closest(".ng-node").dataset.id;
          const reason = this.graph.connect(d.from, d.output, to, row.dataset.input);
          if (reason) {
            this.showToast(`Refused: ${reason}`, "error");
            const fresh = this.nodeBox(to);
            const flash = fresh && fresh.querySelector(`.ng-in[data-input="${CSS.escape(row.dataset.input)}"]`);
            if (flash) { flash.classList.add("ng-refused"); setTimeout(() => flash.classList.remove("ng-refused"), 1200); }
          }
        }
        this.drawLinks();
      } else if (d.kind === "box") {
        this.rubber.style.display = "none";
        if (!d.end) return;
        const x0 = Math.min(d.start.x, d.end.x), x1 = Math.max(d.start.x, d.end.x);
        const y0 = Math.min(d.start.y, d.end.y), y1 = Math.max(d.start.y, d.end.y);
        const inside = [];
        for (const box of this.world.querySelectorAll(".ng-node")) {
          const r = box.getBoundingClientRect();
          if (r.left < x1 && r.right > x0 && r.top < y1 && r.bottom > y0) inside.push(box.dataset.id);
        }
        this.select(inside, d.additive);
      }
    }

    // palette ------------------------------------------------------------------------------------
    buildPalette() {
      const search = el("input", { class: "ng-palette-search", type: "search", placeholder: "Search nodes\u2026", "aria-label": "search nodes" });
      const list = el("div", { class: "ng-palette-list" });
      const palette = el("div", { class: "ng-palette" }, search, list);
      search.addEventListener("input", () => this.fillPalette(search.value));
      search.addEventListener("keydown", (e) => {
        if (e.key === "Escape") { this.closePalette(); this.element.focus(); }
        else if (e.key === "Enter") {
          const first = list.querySelector(".ng-palette-item");
          if (first) this.addFromPalette(first.dataset.type);
        }
        e.stopPropagation();
      });
      return palette;
    }

    // With a query: one list ranked by how well each node's name matches (exact, then prefix, then a
    // word of the name starting with it, then anywhere in name, id, category or description); without
    // one: every node by category.
    fillPalette(query) {
      const words = query.toLowerCase().split(/\s+/).filter(Boolean);
      const list = this.palette.querySelector(".ng-palette-list");
      list.replaceChildren();
      const groups = this.catalog.byCategory();
      const item = (s) => el("div", { class: "ng-palette-item", "data-type": s.id, title: s.description,
        onclick: () => this.addFromPalette(s.id) }, el("span", { text: s.display_name }), el("small", { text: s.id }));
      if (!words.length) {
        for (const category of Object.keys(groups).sort()) {
          list.append(el("div", { class: "ng-palette-cat", text: category }));
          for (const s of groups[category]) list.append(item(s));
        }
        return;
      }
      const ranked = [];
      for (const category of Object.keys(groups)) {
        for (const s of groups[category]) {
          const score = NG.matchScore(query, s, category);
          if (score !== null) ranked.push([score, s.display_name.toLowerCase(), s]);
        }
      }
      // equal scores: the shorter name first (the more general node), then by name
      ranked.sort((a, b) => a[0] - b[0] || a[1].length - b[1].length || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
      for (const [, , s] of ranked) list.append(item(s));
      if (!list.children.length) list.append(el("div", { class: "ng-palette-empty", text: "no node matches" }));
    }

    openPalette(clientX, clientY) {
      const r = this.element.getBoundingClientRect();
      this.paletteAt = this.toWorld(clientX, clientY);
      this.palette.style.left = `${Math.min(clientX - r.left, r.width - 300)}px`;
      this.palette.style.top = `${Math.min(clientY - r.top, r.height - 320)}px`;
      this.palette.classList.add("ng-show");
      const search = this.palette.querySelector("input");
      search.value = "";
      this.fillPalette("");
      search.focus();
    }

    closePalette() { this.palette.classList.remove("ng-show"); }

    addFromPalette(type) {
      const at = this.paletteAt || { x: 40, y: 40 };
      this.closePalette();
      const id = this.graph.addNode(type, at.x, at.y);
      this.select([id]);
      this.element.focus({ preventScroll: true });
      return id;
    }
  }

  NG.Canvas = Canvas;
})();
