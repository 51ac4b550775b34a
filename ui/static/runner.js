// Talking to the server: validate, run (a job: queued, then followed through its event stream), cancel,
// outputs and the gallery.
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
      this.runId = null;  // the job's id
      this.runKey = null;  // the job's secret: only the client that submitted a job may follow, read or cancel it
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
        result = await call("POST", "/api/jobs", { workflow: this.graph.toJSON() });
      } catch (err) {
        const problems = err.status === 422 && err.data && err.data.detail && err.data.detail.problems;
        if (problems) {
          this.markProblems(problems);
          this.setStatus(`not run: ${problems.length} problem(s): see the marked nodes`, "error");
        } else {
          this.setStatus(err.message, "error");
        }
        return;
      }
      this.markProblems([]);
      this.canvas.clearStatus();
      this.runId = result.id;
      this.runKey = result.key;
      this.panel.gallery.replaceChildren();
      this.panel.bar.style.width = "0%";
      this.panel.preview.removeAttribute("src");
      this.panel.preview.classList.remove("ng-show");
      this.setStatus(`job ${this.runId}: queued`, "busy");
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
        const result = await call("POST", `/api/jobs/${this.runId}/cancel`, undefined, { "X-Job-Key": this.runKey });
        if (result.cancelled) this.setStatus("cancelling\u2026", "busy");
        else this.setStatus("nothing is running", "info");
      } catch (err) {
        this.setStatus(err.message, "error");
      }
    }

    async poll(run) {
      // Server-Sent Events: the stream replays the job's events, then sends new ones, and ends with
      // `finished`; after a dropped connection the browser reconnects with Last-Event-ID and resumes.
      this.polling = true;
      try {
        await new Promise((resolve, reject) => {
          const source = new EventSource(this.runUrl(run, "/events"));
          source.onmessage = (message) => {
            const event = JSON.parse(message.data);
            if (event.kind === "finished") {
              source.close();
              resolve();
            } else {
              this.handle(run, event);
            }
          };
          source.onerror = () => {
            if (source.readyState === EventSource.CLOSED) reject(new Error("the event stream was refused"));
          };
        });
        await this.finish(run);
      } catch (err) {
        this.setStatus(`lost the job: ${err.message}`, "error");
      } finally {
        this.polling = false;
      }
    }

    runUrl(run, path, query) {
      // images and event streams load without custom headers: the key rides in the query string
      const key = `key=${encodeURIComponent(this.runKey || "")}`;
      return `/api/jobs/${run}${path}?${query ? query + "&" : ""}${key}`;
    }

    handle(run, event) {
      const c = this.canvas;
      if (event.kind === "run_start") {
        this.setStatus(`job ${run}: running`, "busy");
      } else if (event.kind === "node_start") {
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
      const job = await call("GET", this.runUrl(run, ""));
      const gallery = [];
      const images = {};
      for (const file of job.files) {
        if (file.kind === "preview") (images[file.node] = images[file.node] || []).push(file);
      }
      for (const [node, files] of Object.entries(images)) {
        const urls = files.map((file) => `${file.url}?key=${encodeURIComponent(this.runKey || "")}`);
        this.canvas.setStatus(node, { images: urls });
        for (const url of urls) gallery.push(NG.el("a", { href: url, target: "_blank", title: node },
          NG.el("img", { src: url, alt: node, class: "ng-gallery-image" })));
      }
      this.panel.gallery.replaceChildren(...gallery);
      this.panel.bar.style.width = job.status === "done" ? "100%" : this.panel.bar.style.width;
      const where = job.worker && job.worker !== "local" ? ` on ${job.worker}` : "";  // a Ray worker
      if (job.status === "done") {
        this.setStatus(`job ${run} done${where} in ${(job.seconds || 0).toFixed(2)} s: ran ${job.ran.length}, ` +
          `cached ${job.cached.length}`, "ok");
      } else {
        this.setStatus(`job ${run} ${job.status}: ${job.error}`, "error");
      }
    }
  }

  NG.Runner = Runner;
})();
