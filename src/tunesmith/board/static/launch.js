// Launch: override rows, validate / start through /launch/*, the launched runs table (stop,
// resume, watch) and a launched run's output streamed from /launch/<name>/log (EventSource).
(function () {
  "use strict";
  var form = document.getElementById("ln-form");
  if (!form) return;
  var rows = document.getElementById("ln-overrides");
  var errors = document.getElementById("ln-errors");
  var message = document.getElementById("ln-message");
  var table = document.querySelector("#ln-jobs tbody");
  var logBox = document.getElementById("ln-log");
  var logName = document.getElementById("ln-log-name");
  var source = null;

  function addRow(value) {
    var row = document.createElement("div");
    row.className = "ln-row";
    var input = document.createElement("input");
    input.type = "text";
    input.className = "ln-override";
    input.placeholder = "key.sub=value";
    input.value = value || "";
    row.appendChild(input);
    rows.appendChild(row);
    return input;
  }

  function formBody() {
    var overrides = Array.prototype.map.call(
      document.querySelectorAll(".ln-override"), function (i) { return i.value; });
    var name = document.getElementById("ln-name").value.trim();
    return {
      recipe: document.getElementById("ln-recipe").value,
      overrides: overrides,
      run_name: name === "" ? null : name,
    };
  }

  function showErrors(list) {
    errors.textContent = "";
    list.forEach(function (text) {
      var item = document.createElement("li");
      item.textContent = text;
      errors.appendChild(item);
    });
  }

  function detail(body) {
    if (body && Array.isArray(body.errors)) return body.errors;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map(function (d) { return (d.loc || []).join(".") + ": " + d.msg; });
    }
    return [body && body.detail ? String(body.detail) : "request failed"];
  }

  async function post(url, body) {
    var response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
    var data = await response.json().catch(function () { return null; });
    return { ok: response.ok, data: data };
  }

  async function validate() {
    message.textContent = "";
    var r = await post("/launch/validate", formBody());
    if (!r.ok || !r.data.ok) return showErrors(detail(r.data));
    showErrors([]);
    message.textContent = "valid (" + r.data.method + "): " + r.data.overrides.join(" ");
  }

  async function start(e) {
    e.preventDefault();
    message.textContent = "";
    var r = await post("/launch/start", formBody());
    if (!r.ok) return showErrors(detail(r.data));
    showErrors([]);
    message.textContent = "started " + r.data.name;
    await refresh();
    watch(r.data.name);
  }

  function button(label, cls, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  async function act(name, what) {
    var r = await post("/launch/" + encodeURIComponent(name) + "/" + what);
    if (!r.ok) showErrors(detail(r.data));
    else showErrors([]);
    await refresh();
    if (r.ok && what === "resume") watch(name);
  }

  function render(jobs) {
    table.textContent = "";
    jobs.forEach(function (job) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-run", job.name);
      var link = document.createElement("a");
      link.href = job.run;
      link.textContent = job.name;
      var state = document.createElement("td");
      state.className = "ln-state";
      state.textContent = job.state;
      var actions = document.createElement("td");
      actions.appendChild(button("Watch", "ln-watch", function () { watch(job.name); }));
      if (job.state === "running") {
        actions.appendChild(button("Stop", "ln-stop", function () { act(job.name, "stop"); }));
      }
      if (job.resumable) {
        actions.appendChild(button("Resume", "ln-resume", function () { act(job.name, "resume"); }));
      }
      var cells = [document.createElement("td"), document.createElement("td")];
      cells[0].appendChild(link);
      cells[1].textContent = job.recipe;
      tr.append(cells[0], cells[1], state, actions);
      table.appendChild(tr);
    });
  }

  async function refresh() {
    var response = await fetch("/launch/jobs");
    if (response.ok) render(await response.json());
  }

  function watch(name) {
    if (source) source.close();
    logBox.textContent = "";
    logName.textContent = name;
    source = new EventSource("/launch/" + encodeURIComponent(name) + "/log");
    source.onmessage = function (e) {
      var event = JSON.parse(e.data);
      if (event.type === "log") {
        logBox.textContent += event.text;
        logBox.scrollTop = logBox.scrollHeight;
      } else if (event.type === "state") {
        refresh();
      } else if (event.type === "end") {
        source.close();
        source = null;
        refresh();
      }
    };
  }

  document.getElementById("ln-add").addEventListener("click", function () { addRow("").focus(); });
  document.getElementById("ln-validate").addEventListener("click", validate);
  form.addEventListener("submit", start);
  refresh();
  setInterval(refresh, 2000);
})();
