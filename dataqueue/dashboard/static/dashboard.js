// dataqueue dashboard: plain JavaScript, no build step, no dependencies.
//
// Job data is untrusted (payloads, types, errors come from whoever enqueued the job):
// every value reaches the page through textContent or createElement, never as markup.
(function () {
  "use strict";

  var app = document.getElementById("dq-app");
  var toasts = document.getElementById("dq-toasts");
  var config = JSON.parse(app.getAttribute("data-config"));
  var BASE = config.basePath;
  var PAGE_SIZE = 25;
  var REFRESH_MS = 3000;
  var TOAST_MS = 3000;
  var STATUSES = ["pending", "processing", "completed", "failed", "cancelled", "waiting"];
  // The overview's order: what needs attention first.
  var OVERVIEW_STATUSES = ["pending", "processing", "waiting", "failed", "completed", "cancelled"];
  var STATS_WINDOW = 300; // seconds: the overview's "recent" window

  var state = {
    status: "", // "" is the All tab
    jobType: "", // a job type to list, when no status is chosen
    offset: 0,
    autoRefresh: false,
    timer: null,
    loading: false,
    view: null, // the list view's elements while it is shown
  };

  // -- DOM helpers ------------------------------------------------------------------

  // el("tag.class1.class2", {attr: value}, child, ...): children are nodes or text.
  function el(spec, attrs) {
    var parts = spec.split(".");
    var node = document.createElement(parts[0]);
    if (parts.length > 1) node.className = parts.slice(1).join(" ");
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "onclick" || name === "onchange") node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    });
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(node, c); });
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function badge(status) {
    var known = STATUSES.indexOf(status) >= 0;
    return el("span.dq-badge" + (known ? ".dq-badge-" + status : ""), {}, String(status));
  }

  function spinner() {
    return el("span.dq-spinner", { "aria-hidden": "true" });
  }

  function pretty(value) {
    return el("pre.dq-json", {}, JSON.stringify(value, null, 2));
  }

  // -- time -------------------------------------------------------------------------

  function absoluteTime(iso) {
    if (!iso) return "";
    var date = new Date(iso);
    return isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function relativeTime(iso) {
    var seconds = Math.max(0, Math.floor((Date.now() - new Date(iso).getTime()) / 1000));
    if (seconds < 60) return seconds + "s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
    return Math.floor(seconds / 86400) + "d ago";
  }

  // Seconds as "850 ms", "4.2 s", "3m 12s", "5h 2m", "3d 4h".
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return (Math.round(seconds * 10) / 10) + " s";
    var s = Math.floor(seconds);
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function count(n) {
    return Number(n).toLocaleString();
  }

  // The list's address for a filter: #/?status=failed, #/?type=email, or #/ (all jobs).
  function listHash(status, jobType) {
    if (status) return "#/?status=" + encodeURIComponent(status);
    if (jobType) return "#/?type=" + encodeURIComponent(jobType);
    return "#/";
  }

  function timeCell(iso) {
    if (!iso) return el("span.dq-muted", {}, "—");
    return el("time", { datetime: iso, title: absoluteTime(iso) }, relativeTime(iso));
  }

  // -- API and toasts ---------------------------------------------------------------

  function api(method, path) {
    return fetch(BASE + path, {
      method: method,
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json", "X-Requested-With": "dataqueue" },
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (!response.ok) {
          var message = body && typeof body.error === "string" ? body.error : null;
          throw new Error(message || "Request failed: " + response.status);
        }
        return body;
      });
    });
  }

  function toast(message, kind) {
    var node = el("div.dq-toast.dq-toast-" + (kind === "error" ? "error" : "ok"), {}, message);
    toasts.appendChild(node);
    setTimeout(function () { node.remove(); }, TOAST_MS);
  }

  function jobAction(job, action) {
    var done = action === "cancel" ? "Job #" + job.id + " cancelled" : "Job #" + job.id + " retried";
    return api("POST", "/api/jobs/" + encodeURIComponent(job.id) + "/" + action).then(
      function (result) {
        if (result.changed) toast(done, "ok");
        else toast("Job #" + job.id + " was not changed: it is " + result.job.status, "error");
      },
      function (error) { toast(error.message, "error"); }
    );
  }

  function actionButtons(job, after) {
    function button(label, action, cls) {
      return el("button.dq-btn.dq-btn-small." + cls, {
        type: "button",
        "data-action": action,
        onclick: function (event) {
          event.stopPropagation();
          event.currentTarget.disabled = true;
          jobAction(job, action).then(after);
        },
      }, label);
    }
    return [
      job.canCancel ? button("Cancel", "cancel", "dq-btn-danger") : null,
      job.canRetry ? button("Retry", "retry", "dq-btn-primary") : null,
    ];
  }

  // -- jobs list --------------------------------------------------------------------

  function showList() {
    var autoRefresh = el("input", { type: "checkbox", id: "dq-auto-refresh", onchange: function (e) {
      setAutoRefresh(e.currentTarget.checked);
    } });
    autoRefresh.checked = state.autoRefresh;
    var processButton = el("button.dq-btn.dq-btn-primary", {
      type: "button",
      id: "dq-process",
      disabled: !config.canProcess,
      title: config.canProcess ? "Run one batch of due jobs now" : "No handlers configured",
      onclick: processJobs,
    }, "Process jobs");
    var tabs = el("div.dq-tabs", { role: "tablist" });
    [""].concat(STATUSES).forEach(function (status) {
      var active = status === state.status && !(status === "" && state.jobType);
      tabs.appendChild(el("button.dq-tab" + (active ? ".dq-tab-active" : ""), {
        type: "button",
        role: "tab",
        "data-status": status,
        "aria-selected": active ? "true" : "false",
        onclick: function () { navigate(listHash(status, "")); },
      }, status || "All"));
    });
    var body = el("div.dq-table-wrap");
    var pager = el("div.dq-pager");
    var overview = el("section.dq-overview", { id: "dq-overview", "aria-label": "Overview" });
    clear(app);
    append(app, [
      el("div.dq-header", {},
        el("h1", {}, "Jobs"),
        el("div.dq-controls", {},
          el("label.dq-check", { for: "dq-auto-refresh" }, autoRefresh, " Auto-refresh"),
          el("button.dq-btn", { type: "button", id: "dq-refresh", onclick: function () {
            loadJobs();
          } }, "Refresh"),
          processButton)),
      overview,
      tabs,
      state.jobType ? el("div.dq-filter", { id: "dq-type-filter" },
        "Type: ", el("strong", {}, state.jobType), " ",
        el("a.dq-filter-clear", { href: "#/", title: "Show every job" }, "× clear")) : null,
      el("div.dq-card", {}, body),
      pager,
    ]);
    state.view = { body: body, pager: pager, processButton: processButton, overview: overview };
    setAutoRefresh(state.autoRefresh);
    loadJobs(true);
  }

  function setAutoRefresh(on) {
    state.autoRefresh = on;
    stopTimer();
    if (on) state.timer = setInterval(function () { if (!state.loading) loadJobs(); }, REFRESH_MS);
  }

  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  function loadJobs(showSpinner) {
    var view = state.view;
    if (!view) return Promise.resolve();
    loadStats(view);
    var query = "?limit=" + PAGE_SIZE + "&offset=" + state.offset;
    if (state.status) query += "&status=" + encodeURIComponent(state.status);
    else if (state.jobType) query += "&jobType=" + encodeURIComponent(state.jobType);
    if (showSpinner) {
      clear(view.body);
      append(view.body, el("div.dq-empty", {}, spinner(), " Loading..."));
    }
    state.loading = true;
    return api("GET", "/api/jobs" + query).then(
      function (data) {
        state.loading = false;
        if (state.view !== view) return;
        renderJobs(view, data);
      },
      function (error) {
        state.loading = false;
        if (state.view !== view) return;
        clear(view.body);
        append(view.body, el("div.dq-empty.dq-error", {}, error.message));
      }
    );
  }

  function renderJobs(view, data) {
    clear(view.body);
    if (!data.jobs.length) {
      append(view.body, el("div.dq-empty", {}, "No jobs found"));
    } else {
      var rows = data.jobs.map(function (job) {
        return el("tr", { "data-job-id": job.id },
          el("td", {}, el("a.dq-id", { href: "#/jobs/" + encodeURIComponent(job.id) }, "#" + job.id)),
          el("td.dq-type", {}, job.jobType),
          el("td", {}, badge(job.status)),
          el("td", {}, String(job.priority)),
          el("td", {}, job.attempts + "/" + job.maxAttempts),
          el("td", {}, timeCell(job.createdAt)),
          el("td.dq-actions", {}, actionButtons(job, function () { loadJobs(); })));
      });
      append(view.body, el("table.dq-table.dq-jobs", {},
        el("thead", {}, el("tr", {}, ["ID", "Type", "Status", "Priority", "Attempts", "Created",
          "Actions"].map(function (h) { return el("th", {}, h); }))),
        el("tbody", {}, rows)));
    }
    clear(view.pager);
    append(view.pager, [
      el("button.dq-btn", { type: "button", id: "dq-prev", disabled: state.offset === 0,
        onclick: function () { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadJobs(true); },
      }, "← Previous"),
      el("span.dq-page", {}, "Page " + (Math.floor(state.offset / PAGE_SIZE) + 1)),
      el("button.dq-btn", { type: "button", id: "dq-next", disabled: !data.hasMore,
        onclick: function () { state.offset += PAGE_SIZE; loadJobs(true); },
      }, "Next →"),
    ]);
  }

  // -- overview (counts by status and type) ---------------------------------------

  function loadStats(view) {
    if (view.statsLoading) return;
    view.statsLoading = true;
    api("GET", "/api/stats?window=" + STATS_WINDOW).then(
      function (data) {
        view.statsLoading = false;
        if (state.view === view) renderOverview(view.overview, data.stats);
      },
      function (error) {
        view.statsLoading = false;
        if (state.view !== view) return;
        clear(view.overview);
        append(view.overview, el("div.dq-empty.dq-error", {}, "Overview: " + error.message));
      }
    );
  }

  function failing(type) {
    return type.failedRecent > 0;
  }

  function renderOverview(node, stats) {
    var span = stats.window % 60 === 0 ? stats.window / 60 + " min" : stats.window + " s";
    var notes = {
      pending: stats.oldestPendingAge !== null ? "oldest due " + duration(stats.oldestPendingAge) : "",
      failed: count(stats.failedRetrying) + " to retry · " + count(stats.failedFinal) + " final",
      completed: count(stats.completedRecent) + " in " + span,
    };
    var cards = el("div.dq-stats", {}, OVERVIEW_STATUSES.map(function (status) {
      var attention = status === "failed" && stats.failedRecent > 0;
      return el("a.dq-stat.dq-stat-" + status + (attention ? ".dq-stat-alert" : "") +
          (state.status === status ? ".dq-stat-active" : ""), {
        href: listHash(status, ""),
        "data-stat": status,
        title: "List " + status + " jobs",
      },
        el("span.dq-stat-count", {}, count(stats[status])),
        el("span.dq-stat-label", {}, status),
        notes[status] ? el("span.dq-stat-note", {}, notes[status]) : null);
    }));
    var types = stats.jobTypes.slice().sort(function (a, b) {
      if (failing(a) !== failing(b)) return failing(a) ? -1 : 1;
      return a.jobType < b.jobType ? -1 : a.jobType > b.jobType ? 1 : 0;
    });
    var table = types.length ? el("div.dq-table-wrap", {}, el("table.dq-table.dq-type-table", {},
      el("thead", {}, el("tr", {}, [
        ["Type", ""],
        ["Pending", ""],
        ["Oldest due", "How long the longest-waiting due pending job has been due"],
        ["Running", "Processing now"],
        ["Waiting", "Paused by a workflow wait"],
        ["Failed", "Awaiting a retry / failed for good"],
        ["Done " + span, "Completed in the last " + span],
        ["Failed " + span, "Failed attempts in the last " + span],
        ["p50", "Median run time of the jobs completed in the last " + span],
        ["p95", "95th percentile run time of the jobs completed in the last " + span],
      ].map(function (h) { return el("th", { title: h[1] || null }, h[0]); }))),
      el("tbody", {}, types.map(function (type) {
        return el("tr" + (failing(type) ? ".dq-failing" : ""), { "data-job-type": type.jobType },
          el("td.dq-type", {},
            el("a.dq-type-link", { href: listHash("", type.jobType), title: "List " + type.jobType + " jobs" },
              type.jobType),
            failing(type) ? el("span.dq-badge.dq-badge-failed.dq-failing-badge", {}, "failing") : null),
          el("td", {}, count(type.pending)),
          el("td", {}, duration(type.oldestPendingAge)),
          el("td", {}, count(type.processing)),
          el("td", {}, count(type.waiting)),
          el("td", {}, count(type.failedRetrying) + " / " + count(type.failedFinal)),
          el("td", {}, count(type.completedRecent)),
          el("td.dq-failed-recent", {}, count(type.failedRecent)),
          el("td", {}, duration(type.runTimeP50)),
          el("td", {}, duration(type.runTimeP95)));
      })))) : null;
    var shown = node.querySelector("details"); // keep it folded if the user folded it
    var open = shown ? shown.open : true;
    clear(node);
    append(node, [
      cards,
      table ? el("details.dq-card.dq-types", { open: open },
        el("summary", {}, "By job type (" + types.length + ")",
          el("span.dq-muted", {}, " · recent: last " + span + " · as of " +
            absoluteTime(stats.collectedAt))),
        table) : null,
    ]);
  }

  function processJobs() {
    var button = state.view && state.view.processButton;
    if (!button) return;
    button.disabled = true;
    clear(button);
    append(button, [spinner(), " Processing..."]);
    api("POST", "/api/process").then(
      function (data) { toast("Processed " + data.processed + " job(s)", "ok"); },
      function (error) { toast(error.message, "error"); }
    ).then(function () {
      button.disabled = !config.canProcess;
      clear(button);
      append(button, "Process jobs");
      return loadJobs();
    });
  }

  // -- job detail -------------------------------------------------------------------

  function showDetail(jobId) {
    state.view = null;
    stopTimer(); // detail data loads once; the checkbox keeps its setting for the list
    clear(app);
    append(app, [
      el("a.dq-back", { href: listHash(state.status, state.jobType) }, "← Back to Jobs"),
      el("div.dq-empty", {}, spinner(), " Loading..."),
    ]);
    var current = location.hash;
    Promise.all([
      api("GET", "/api/jobs/" + jobId),
      api("GET", "/api/jobs/" + jobId + "/events"),
    ]).then(
      function (results) {
        if (location.hash !== current) return;
        renderDetail(results[0].job, results[1].events, jobId);
      },
      function (error) {
        if (location.hash !== current) return;
        clear(app);
        append(app, [
          el("a.dq-back", { href: listHash(state.status, state.jobType) }, "← Back to Jobs"),
          el("div.dq-empty.dq-error", {}, error.message),
        ]);
      }
    );
  }

  function renderDetail(job, events, jobId) {
    var reload = function () { showDetail(jobId); };
    clear(app);
    append(app, [
      el("a.dq-back", { href: listHash(state.status, state.jobType) }, "← Back to Jobs"),
      el("div.dq-header", {},
        el("h1", {}, "Job #" + job.id, " ", badge(job.status)),
        el("div.dq-controls", {}, actionButtons(job, reload))),
      card("properties", "Properties", propertiesTable(job)),
      card("payload", "Payload", pretty(job.payload)),
      job.output !== null && job.output !== undefined
        ? card("output", "Output", pretty(job.output)) : null,
      job.errorHistory && job.errorHistory.length
        ? card("errors", "Error History", errorHistory(job)) : null,
      job.stepData && Object.keys(job.stepData).length
        ? card("steps", "Step Data", pretty(job.stepData)) : null,
      card("events", "Events (" + events.length + ")", timeline(events)),
    ]);
  }

  function card(name, title, content) {
    return el("section.dq-card", { "data-card": name },
      el("h2", {}, title), el("div.dq-card-body", {}, content));
  }

  function propertiesTable(job) {
    var rows = [
      ["Type", job.jobType],
      ["Status", badge(job.status)],
      ["Priority", String(job.priority)],
      ["Attempts", job.attempts + " / " + job.maxAttempts],
      job.progress !== null && job.progress !== undefined ? ["Progress", progressBar(job.progress)] : null,
      ["Created", dateValue(job.createdAt)],
      ["Updated", dateValue(job.updatedAt)],
      job.startedAt ? ["Started", dateValue(job.startedAt)] : null,
      job.completedAt ? ["Completed", dateValue(job.completedAt)] : null,
      ["Run At", dateValue(job.runAt)],
      job.nextAttemptAt ? ["Next Attempt", dateValue(job.nextAttemptAt)] : null,
      job.timeoutMs !== null && job.timeoutMs !== undefined ? ["Timeout", job.timeoutMs + "ms"] : null,
      job.tags && job.tags.length ? ["Tags", job.tags.map(function (t) {
        return el("span.dq-tag", {}, t);
      })] : null,
      job.idempotencyKey ? ["Idempotency Key", job.idempotencyKey] : null,
      job.lockedBy ? ["Locked By", job.lockedBy] : null,
      job.failureReason ? ["Failure Reason", job.failureReason] : null,
      job.pendingReason ? ["Pending Reason", job.pendingReason] : null,
      job.waitUntil ? ["Wait Until", dateValue(job.waitUntil)] : null,
      job.waitTokenId ? ["Wait Token", job.waitTokenId] : null,
      job.groupId ? ["Group", job.groupId] : null,
      job.deadLetterJobId ? ["Dead-letter Job", el("a", {
        href: "#/jobs/" + encodeURIComponent(job.deadLetterJobId) }, "#" + job.deadLetterJobId)] : null,
    ];
    return el("table.dq-props", {}, el("tbody", {}, rows.filter(Boolean).map(function (row) {
      return el("tr", {}, el("th", {}, row[0]), el("td", {}, row[1]));
    })));
  }

  function dateValue(iso) {
    if (!iso) return el("span.dq-muted", {}, "—");
    return el("time", { datetime: iso, title: iso }, absoluteTime(iso) + " (" + relativeTime(iso) + ")");
  }

  function progressBar(progress) {
    var pct = Math.max(0, Math.min(100, Number(progress) || 0));
    var fill = el("div.dq-progress-fill");
    fill.style.width = pct + "%";
    return el("div.dq-progress-row", {},
      el("div.dq-progress", { role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0,
        "aria-valuemax": 100 }, fill),
      el("span", {}, pct + "%"));
  }

  function errorHistory(job) {
    return el("ul.dq-errors", {}, job.errorHistory.map(function (entry) {
      return el("li", {},
        el("div.dq-muted", {}, absoluteTime(entry && entry.timestamp)),
        el("pre.dq-json", {}, entry && entry.message !== undefined ? String(entry.message) : JSON.stringify(entry)));
    }));
  }

  function timeline(events) {
    if (!events.length) return el("div.dq-empty", {}, "No events recorded");
    return el("ol.dq-timeline", {}, events.slice().reverse().map(function (event) {
      return el("li.dq-event", {},
        el("div.dq-event-head", {},
          el("span.dq-event-type", {}, event.eventType),
          " ",
          el("time.dq-muted", { datetime: event.createdAt, title: event.createdAt },
            absoluteTime(event.createdAt))),
        event.metadata !== null && event.metadata !== undefined ? pretty(event.metadata) : null);
    }));
  }

  // -- routing ----------------------------------------------------------------------

  function navigate(hash) {
    if (location.hash === hash || (hash === "#/" && !location.hash)) route();
    else location.hash = hash;
  }

  function route() {
    var match = /^#\/jobs\/([0-9]+)\/?$/.exec(location.hash);
    if (match) {
      showDetail(match[1]);
      return;
    }
    var filters = new URLSearchParams(location.hash.replace(/^#\/?\??/, ""));
    var status = filters.get("status") || "";
    state.status = STATUSES.indexOf(status) >= 0 ? status : "";
    state.jobType = state.status ? "" : filters.get("type") || "";
    state.offset = 0;
    showList();
  }

  window.addEventListener("hashchange", route);
  route();
})();
