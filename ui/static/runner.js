// Talking to the server: validate, run (polling the event log), cancel, outputs and the gallery.
(function () {
  "use strict";
  const NG = (window.NG = window.NG || {});

  async function call(method, url, body, headers) {
    const options = { method, headers: Object.assign({}, headers || {}), credentials: "same-origin" };
    if (body !== undefined) {
      options.body = typeof body === "string" ? body : JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail !== undefined ? data.detail : data;
      const message = detail && detail.message ? detail.message : typeof detail === "string" ? detail :
        data && data.error ? data.error : `${response.status} ${response.statusText}`;
      const error = new Error(message);
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  }
  NG.call = call;

  class Runner {
    constructor(canvas, panel) {
      this.canvas = canvas;
      this.graph = canvas.graph;
      this.panel = panel;  // {status, bar, preview, gallery, problems}
      this.runId = null;
      this.runKey = null;  // the run's secret: only the client that started a run may read or cancel it
      this.previews = 0;
    }

    setStatus(text, kind) {
      this.panel.status.textContent = text;
      this.panel.status.className = `ng-run-status ng-${kind || "info"}`;
    }

    markProblems(problems) {
      this.canvas.clearStatus(["state", "seconds", "images"]);
      const byNode = {};
      const general = [];
      for (const p of problems) {
        if (p.node && p.node in this.graph.nodes) (byNode[p.node] = byNode[p.node] || []).push(p);
        else general.push(p);
      }
      for (const [id, list] of Object.entries(byNode)) this.canvas.setStatus(id, { problems: list });
      this.panel.problems.replaceChildren(...problems.map((p) => NG.el("li", {
        class: "ng-problem", text: `${p.node ? p.node + (p.input ? "." + p.input : "") + ": " : ""}${p.message}`,
      })));
      return general;
    }

    async validate() {
      try {
        const result = await call("POST", "/api/validate", this.graph.toJSON());
        this.markProblems(result.problems);
        this.setStatus(result.ok ? "valid" : `${result.problems.length} problem(s): see the marked nodes`,
          result.ok ? "ok" : "error");
        return result.ok;
      } catch (err) {
        this.setStatus(err.message, "error");
        return false;
      }
    }

    async run() {
      if (this.polling) return;
      let result;
      try {
        result = await call("POST", "/api/run", this.graph.toJSON());
      } catch (err) {
        this.setStatus(err.message, "error");
        return;
      }
      if (!result.ok) {
        this.markProblems(result.problems || []);
        this.setStatus(`not run: ${(result.problems || []).length} problem(s): see the marked nodes`, "error");
        return;
      }
      this.markProblems([]);
      this.canvas.clearStatus();
      this.runId = result.run;
      this.runKey = result.key;
      this.panel.gallery.replaceChildren();
      this.panel.bar.style.width = "0%";
      this.panel.preview.removeAttribute("src");
      this.panel.preview.classList.remove("ng-show");
      this.setStatus(`run ${this.runId}: starting`, "busy");
      this.panel.root.classList.add("ng-is-running");
      await this.poll(this.runId);
      this.panel.root.classList.remove("ng-is-running");
    }

    async cancel() {
      try {
        if (this.runId === null || !this.polling) {
          this.setStatus("nothing is running", "info");
          return;
        }
        const result = await call("POST", `/api/runs/${this.runId}/cancel`, undefined, { "X-Run-Key": this.runKey });
        if (result.cancelled) this.setStatus("cancelling\u2026", "busy");
        else this.setStatus("nothing is running", "info");
      } catch (err) {
        this.setStatus(err.message, "error");
      }
    }

    async poll(run) {
      this.polling = true;
      let since = 0;
      try {
        for (;;) {
          const data = await call("GET", this.runUrl(run, "/events", `since=${since}`));
          since = data.next;
          let finished = false;
          for (const event of data.events) {
            if (event.kind === "finished") finished = true;
            else this.handle(run, event);
          }
          if (finished) break;
          await new Promise((resolve) => setTimeout(resolve, 150));
        }
        await this.finish(run);
      } catch (err) {
        this.setStatus(`lost the run: ${err.message}`, "error");
      } finally {
        this.polling = false;
      }
    }

    runUrl(run, path, query) {
      // images load through <img src>, which sends no headers: the key rides in the query string
      const key = `key=${encodeURIComponent(this.runKey || "")}`;
      return `/api/runs/${run}${path}?${query ? query + "&" : ""}${key}`;
    }

    handle(run, event) {
      const c = this.canvas;
      if (event.kind === "node_start") {
        c.setStatus(event.node, { state: "running" });
        this.setStatus(`running ${event.node} (${event.type})`, "busy");
      } else if (event.kind === "node_cached") {
        c.setStatus(event.node, { state: "cached" });
      } else if (event.kind === "node_done") {
        c.setStatus(event.node, { state: "done", seconds: event.seconds, progress: null });
      } else if (event.kind === "progress") {
        c.setStatus(event.node, { progress: [event.step, event.total] });
        this.panel.bar.style.width = `${(100 * event.step) / Math.max(1, event.total)}%`;
        const loss = event.info && event.info.loss !== undefined ? `, loss ${Number(event.info.loss).toFixed(4)}` : "";
        this.setStatus(`running ${event.node}: step ${event.step}/${event.total}${loss}`, "busy");
        if (event.preview) {
          this.previews += 1;
          this.panel.preview.src = this.runUrl(run, "/preview.png", `n=${this.previews}`);
          this.panel.preview.classList.add("ng-show");
        }
      } else if (event.kind === "node_error") {
        c.setStatus(event.node, { state: "failed", problems: [{ message: event.message }] });
      }
    }

    async finish(run) {
      const summary = await call("GET", this.runUrl(run, ""));
      const gallery = [];
      for (const [node, count] of Object.entries(summary.images)) {
        const urls = [];
        for (let i = 0; i < count; i++) {
          urls.push(this.runUrl(run, `/outputs/${encodeURIComponent(node)}.png`, `index=${i}`));
        }
        this.canvas.setStatus(node, { images: urls });
        for (const url of urls) gallery.push(NG.el("a", { href: url, target: "_blank", title: node },
          NG.el("img", { src: url, alt: node, class: "ng-gallery-image" })));
      }
      this.panel.gallery.replaceChildren(...gallery);
      this.panel.bar.style.width = summary.status === "ok" ? "100%" : this.panel.bar.style.width;
      if (summary.status === "ok") {
        this.setStatus(`run ${run} done in ${summary.seconds.toFixed(2)} s: ran ${summary.ran.length}, ` +
          `cached ${summary.cached.length}`, "ok");
      } else {
        this.setStatus(`run ${run} ${summary.status}: ${summary.error}`, "error");
      }
    }
  }

  NG.Runner = Runner;
})();
