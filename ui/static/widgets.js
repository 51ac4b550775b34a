// Widgets for primitive inputs, chosen from the input's JSON Schema (made by pydantic on the server):
// enum -> dropdown, boolean -> checkbox, integer/number -> number box (slider when x-widget asks and
// both bounds exist), string -> text (textarea for x-widget multiline), anything else -> JSON text.
(function () {
  "use strict";
  const NG = (window.NG = window.NG || {});

  function effective(schema) {
    // Optional[...] arrives as anyOf [X, null]: edit X.
    if (Array.isArray(schema.anyOf)) {
      const real = schema.anyOf.filter((s) => s.type !== "null");
      if (real.length === 1) return Object.assign({}, schema, real[0], { anyOf: undefined });
    }
    return schema;
  }

  function bounds(schema) {
    const min = schema.minimum !== undefined ? schema.minimum : schema.exclusiveMinimum;
    const max = schema.maximum !== undefined ? schema.maximum : schema.exclusiveMaximum;
    return { min, max };
  }

  function widgetFor(rawSchema, value, set, fail) {
    const el = NG.el;
    const schema = effective(rawSchema);
    const hint = schema["x-widget"] || {};
    const shown = value === undefined ? schema.default : value;
    if (Array.isArray(schema.enum) && hint.kind !== "text") {
      const select = el("select", { class: "ng-widget", onchange: () => set(schema.enum[select.selectedIndex]) });
      for (const option of schema.enum) select.append(el("option", { text: String(option) }));
      const index = schema.enum.findIndex((o) => JSON.stringify(o) === JSON.stringify(shown));
      select.selectedIndex = index;
      return select;
    }
    if (schema.type === "boolean") {
      const box = el("input", { class: "ng-widget ng-check", type: "checkbox", onchange: () => set(box.checked) });
      box.checked = Boolean(shown);
      return box;
    }
    if (schema.type === "integer" || schema.type === "number") {
      const { min, max } = bounds(schema);
      const step = hint.step || (schema.type === "integer" ? 1 : "any");
      const parse = (text) => (schema.type === "integer" ? parseInt(text, 10) : parseFloat(text));
      const number = el("input", { class: "ng-widget ng-number", type: "number", min, max, step });
      number.value = shown === undefined || shown === null ? "" : String(shown);
      number.addEventListener("change", () => {
        if (number.value.trim() === "") { set(undefined); return; }
        const v = parse(number.value);
        if (Number.isNaN(v)) { fail(`not a number: ${number.value}`); return; }
        set(v);
      });
      if (hint.kind === "slider" && min !== undefined && max !== undefined) {
        const slider = el("input", { class: "ng-widget ng-slider", type: "range", min, max,
          step: step === "any" ? (max - min) / 100 : step });
        slider.value = String(shown === undefined ? min : shown);
        slider.addEventListener("input", () => { number.value = slider.value; });
        slider.addEventListener("change", () => set(parse(slider.value)));
        return el("span", { class: "ng-slider-pair" }, slider, number);
      }
      return number;
    }
    if (schema.type === "string") {
      if (hint.kind === "multiline") {
        const area = el("textarea", { class: "ng-widget ng-text", rows: "3", onchange: () => set(area.value) });
        area.value = shown === undefined || shown === null ? "" : String(shown);
        return area;
      }
      const text = el("input", { class: "ng-widget ng-text", type: "text", onchange: () => set(text.value) });
      if (hint.kind === "file") text.placeholder = "path";
      text.value = shown === undefined || shown === null ? "" : String(shown);
      return text;
    }
    const json = el("input", { class: "ng-widget ng-json", type: "text", title: "JSON value" });
    json.value = shown === undefined ? "" : JSON.stringify(shown);
    json.addEventListener("change", () => {
      if (json.value.trim() === "") { set(undefined); return; }
      try { set(JSON.parse(json.value)); } catch (err) { json.classList.add("ng-bad"); fail(`not valid JSON: ${err.message}`); }
    });
    return json;
  }

  NG.widgetFor = widgetFor;
})();
