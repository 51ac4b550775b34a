// The graph model kept in the browser: the workflow JSON plus positions, with undo/redo.
// Link checks use the socket lineage sent by the server (same rule as nodegraph.types.can_connect),
// and the list rule of nodegraph.validate: a link carrying a list feeds an input that takes a list (whole)
// or one of its elements (the node then runs once per element).
(function () {
  "use strict";
  const NG = (window.NG = window.NG || {});

  class Catalog {
    constructor(payload) {
      this.types = payload.types || {};
      this.nodes = payload.nodes || {};
    }

    color(type) {
      return (this.types[type] || {}).color || "#9e9e9e";
    }

    // An output feeds an input when its type is the input's type or a descendant, or either is ANY.
    canConnect(outType, inType) {
      if (outType === "ANY" || inType === "ANY") return true;
      if (inType === "FLOAT" && outType === "INT") return true;
      const lineage = (this.types[outType] || {}).lineage || [outType];
      return lineage.includes(inType);
    }

    byCategory() {
      const groups = {};
      for (const schema of Object.values(this.nodes)) {
        const cat = schema.category || "other";
        (groups[cat] = groups[cat] || []).push(schema);
      }
      for (const list of Object.values(groups)) list.sort((a, b) => a.display_name.localeCompare(b.display_name));
      return groups;
    }
  }

  function isLink(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value) &&
      Object.keys(value).length === 2 && "from" in value && "output" in value;
  }

  function clone(value) {
    return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
  }

  class Graph {
    constructor(catalog) {
      this.catalog = catalog;
      this.nodes = {};
      this.positions = {};
      this.name = "";
      this.description = "";
      this.uiExtra = {};
      this.undoStack = [];
      this.redoStack = [];
      this.listeners = [];
    }

    onChange(fn) { this.listeners.push(fn); }
    changed(what) { this.levelMemo = null; for (const fn of this.listeners) fn(what); }

    // history ---------------------------------------------------------------------------------
    snapshot() { return JSON.stringify(this.toJSON()); }
    checkpoint() {
      this.undoStack.push(this.snapshot());
      if (this.undoStack.length > 200) this.undoStack.shift();
      this.redoStack = [];
    }
    undo() {
      if (!this.undoStack.length) return false;
      this.redoStack.push(this.snapshot());
      this.load(JSON.parse(this.undoStack.pop()), true);
      return true;
    }
    redo() {
      if (!this.redoStack.length) return false;
      this.undoStack.push(this.snapshot());
      this.load(JSON.parse(this.redoStack.pop()), true);
      return true;
    }

    // schema lookups ---------------------------------------------------------------------------
    schemaOf(id) { const n = this.nodes[id]; return n ? this.catalog.nodes[n.type] : undefined; }

    inputNames(id) {
      const schema = this.schemaOf(id);
      const names = schema ? Object.keys(schema.inputs) : [];
      for (const name of Object.keys(this.nodes[id].inputs)) if (!names.includes(name)) names.push(name);
      return names;
    }

    outputNames(id) {
      const schema = this.schemaOf(id);
      if (schema) return Object.keys(schema.outputs);
      const names = [];  // unknown type: the outputs other nodes link to
      for (const node of Object.values(this.nodes)) {
        for (const value of Object.values(node.inputs)) {
          if (isLink(value) && value.from === id && !names.includes(value.output)) names.push(value.output);
        }
      }
      return names;
    }

    inputType(id, input) {
      const spec = (this.schemaOf(id) || { inputs: {} }).inputs[input];
      return spec ? spec.type : "ANY";
    }

    outputType(id, output) {
      const spec = (this.schemaOf(id) || { outputs: {} }).outputs[output];
      return spec ? spec.type : "ANY";
    }

    // The list levels (outer first: "sweep", "list") a link from id.output carries.
    outputLevels(id, output) {
      const spec = (this.schemaOf(id) || { outputs: {} }).outputs[output];
      const levels = this.nodeLevels(id);
      return spec && spec.list && !levels.includes(spec.list) ? levels.concat([spec.list]) : levels;
    }

    // The levels node `id` runs over: those of its inputs' links that its inputs do not take whole
    // (remembered until the graph changes).
    nodeLevels(id) {
      if (!this.levelMemo) this.levelMemo = new Map();
      if (this.levelMemo.has(id)) return this.levelMemo.get(id);
      if (!(id in this.nodes)) return [];
      this.levelMemo.set(id, []);  // a node on a cycle sees itself as carrying nothing
      const found = new Set();
      for (const [input, value] of Object.entries(this.nodes[id].inputs)) {
        if (!isLink(value)) continue;
        const rule = this.linkRule(value.from, value.output, id, input);
        if (rule) for (const level of rule.mapped) found.add(level);
      }
      const levels = ["sweep", "list"].filter((level) => found.has(level));
      this.levelMemo.set(id, levels);
      return levels;
    }

    // How input `input` of `to` takes from.output: {whole, mapped levels}, or null when the types do not fit.
    linkRule(from, output, to, input) {
      const outType = this.outputType(from, output);
      const carried = this.outputLevels(from, output);
      const spec = (this.schemaOf(to) || { inputs: {} }).inputs[input] || { type: "ANY" };
      const element = spec.list_of;
      if (carried.length && carried[carried.length - 1] === "list" && element && this.catalog.canConnect(outType, element)) {
        return { whole: true, mapped: carried.slice(0, -1) };
      }
      const single = spec.list_of && spec.type === spec.list_of ? spec.list_of : spec.type;
      return this.catalog.canConnect(outType, single) ? { whole: false, mapped: carried } : null;
    }

    carriesList(from, output) { return this.outputLevels(from, output).length > 0; }

    links() {
      const out = [];
      for (const [to, node] of Object.entries(this.nodes)) {
        for (const [input, value] of Object.entries(node.inputs)) {
          if (isLink(value)) out.push({ from: value.from, output: value.output, to, input });
        }
      }
      return out;
    }

    // editing ----------------------------------------------------------------------------------
    newId(type) {
      const base = type.split("/").pop().replace(/[^A-Za-z0-9_]/g, "_") || "node";
      let id = base;
      for (let n = 2; id in this.nodes; n++) id = `${base}_${n}`;
      return id;
    }

    addNode(type, x, y) {
      const schema = this.catalog.nodes[type];
      if (!schema) throw new Error(`unknown node type ${type}`);
      this.checkpoint();
      const id = this.newId(type);
      const inputs = {};
      for (const [name, spec] of Object.entries(schema.inputs)) {
        if (spec.widget && spec.schema && "default" in spec.schema) inputs[name] = clone(spec.schema.default);
      }
      this.nodes[id] = { type, version: schema.version, inputs };
      this.positions[id] = [Math.round(x), Math.round(y)];
      this.changed("add");
      return id;
    }

    removeNodes(ids) {
      const doomed = ids.filter((id) => id in this.nodes);
      if (!doomed.length) return;
      this.checkpoint();
      for (const id of doomed) { delete this.nodes[id]; delete this.positions[id]; }
      for (const [to, node] of Object.entries(this.nodes)) {
        for (const [input, value] of Object.entries(node.inputs)) {
          if (isLink(value) && doomed.includes(value.from)) this.clearInput(to, input);
        }
      }
      this.changed("remove");
    }

    clearInput(id, input) {
      const spec = (this.schemaOf(id) || { inputs: {} }).inputs[input];
      if (spec && spec.widget && spec.schema && "default" in spec.schema) {
        this.nodes[id].inputs[input] = clone(spec.schema.default);
      } else {
        delete this.nodes[id].inputs[input];
      }
    }

    reaches(start, target) {
      // Whether `target` is downstream of `start` (following links forward).
      const stack = [start];
      const seen = new Set();
      while (stack.length) {
        const id = stack.pop();
        if (id === target) return true;
        if (seen.has(id)) continue;
        seen.add(id);
        for (const link of this.links()) if (link.from === id) stack.push(link.to);
      }
      return false;
    }

    // Returns a reason string when the link is refused, else "".
    refusal(from, output, to, input) {
      if (!(from in this.nodes) || !(to in this.nodes)) return "no such node";
      if (from === to) return "a node cannot feed itself";
      if (this.reaches(to, from)) return `linking ${from} into ${to} would make a cycle`;
      if (!this.linkRule(from, output, to, input)) {
        const levels = this.outputLevels(from, output).map((level) => `a ${level} of `).join("");
        const spec = (this.schemaOf(to) || { inputs: {} }).inputs[input] || { type: "ANY" };
        const takes = spec.list_of ? `a list of ${spec.list_of}` : spec.type;
        return `${from}.${output} is ${levels}${this.outputType(from, output)}, but input '${input}' of ${to} takes ${takes}`;
      }
      return "";
    }

    connect(from, output, to, input) {
      const reason = this.refusal(from, output, to, input);
      if (reason) return reason;
      this.checkpoint();
      this.nodes[to].inputs[input] = { from, output };
      this.changed("connect");
      return "";
    }

    disconnect(to, input) {
      if (!(to in this.nodes) || !isLink(this.nodes[to].inputs[input])) return;
      this.checkpoint();
      this.clearInput(to, input);
      this.changed("disconnect");
    }

    setValue(id, input, value) {
      const node = this.nodes[id];
      if (!node || JSON.stringify(node.inputs[input]) === JSON.stringify(value)) return;
      this.checkpoint();
      if (value === undefined) delete node.inputs[input];
      else node.inputs[input] = value;
      this.changed("value");
    }

    setListMode(id, mode) {
      const node = this.nodes[id];
      if (!node || (node.list_mode || "zip") === mode) return;
      this.checkpoint();
      if (mode === "zip") delete node.list_mode;
      else node.list_mode = mode;
      this.changed("value");
    }

    // Bypass / mute (saved as the node's "mode"; the engine honours it headlessly too): sets `mode` on
    // every node of `ids`, or back to active when all of them have it already. One undo step.
    toggleMode(ids, mode) {
      const nodes = ids.filter((id) => id in this.nodes);
      if (!nodes.length) return;
      const all = nodes.every((id) => this.nodes[id].mode === mode);
      this.checkpoint();
      for (const id of nodes) {
        if (all) delete this.nodes[id].mode;
        else this.nodes[id].mode = mode;
      }
      this.changed("mode");  // redraws the nodes
    }

    moveNodes(ids, dx, dy) {
      for (const id of ids) {
        const p = this.positions[id];
        if (p) this.positions[id] = [Math.round(p[0] + dx), Math.round(p[1] + dy)];
      }
    }

    // JSON ---------------------------------------------------------------------------------------
    toJSON() {
      const nodes = {};
      for (const [id, node] of Object.entries(this.nodes)) {
        nodes[id] = { type: node.type, inputs: clone(node.inputs) };
        if (node.version !== undefined && node.version !== null) nodes[id].version = node.version;
        if (node.list_mode) nodes[id].list_mode = node.list_mode;
        if (node.mode && node.mode !== "active") nodes[id].mode = node.mode;
      }
      const data = { format: "nodegraph/workflow", version: 1, name: this.name, nodes };
      if (this.description) data.description = this.description;
      if (this.subgraphs && Object.keys(this.subgraphs).length) data.subgraphs = clone(this.subgraphs);
      const positions = {};
      for (const id of Object.keys(this.nodes)) if (this.positions[id]) positions[id] = this.positions[id];
      data.ui = Object.assign({}, this.uiExtra, { positions });
      return data;
    }

    load(data, keepHistory) {
      if (!keepHistory) { this.undoStack = []; this.redoStack = []; }
      this.nodes = {};
      for (const [id, node] of Object.entries(data.nodes || {})) {
        this.nodes[id] = { type: node.type, version: node.version, inputs: clone(node.inputs || {}) };
        if (node.list_mode !== undefined) this.nodes[id].list_mode = node.list_mode;
        if (node.mode && node.mode !== "active") this.nodes[id].mode = node.mode;
      }
      this.subgraphs = clone(data.subgraphs || {});  // kept as saved: the engine flattens them
      this.name = data.name || "";
      this.description = data.description || "";
      const ui = Object.assign({}, data.ui || {});
      const positions = ui.positions || {};
      delete ui.positions;
      this.uiExtra = ui;
      this.positions = {};
      for (const [id, p] of Object.entries(positions)) {
        if (id in this.nodes && Array.isArray(p) && p.length === 2) this.positions[id] = [Number(p[0]), Number(p[1])];
      }
      this.layoutMissing();
      this.changed("load");
    }

    // Place nodes without a saved position in columns by link depth.
    layoutMissing() {
      const missing = Object.keys(this.nodes).filter((id) => !this.positions[id]);
      if (!missing.length) return;
      const depth = {};
      const visiting = new Set();
      const depthOf = (id) => {
        if (id in depth) return depth[id];
        if (visiting.has(id)) return 0;
        visiting.add(id);
        let d = 0;
        for (const value of Object.values(this.nodes[id].inputs)) {
          if (isLink(value) && value.from in this.nodes) d = Math.max(d, depthOf(value.from) + 1);
        }
        depth[id] = d;
        return d;
      };
      const rows = {};
      for (const id of Object.keys(this.nodes).sort()) {
        const d = depthOf(id);
        if (this.positions[id]) continue;
        rows[d] = (rows[d] || 0) + 1;
        this.positions[id] = [40 + d * 290, 40 + (rows[d] - 1) * 230];
      }
    }
  }

  NG.Catalog = Catalog;
  NG.Graph = Graph;
  NG.isLink = isLink;
  NG.clone = clone;
})();
