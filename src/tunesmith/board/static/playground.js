// Playground: POST the prompt, read the server-sent events of /playground/stream with fetch
// (EventSource cannot POST), and append each column's text as it arrives.
(function () {
  "use strict";
  var form = document.getElementById("pg-form");
  if (!form) return;
  var baseSelect = document.getElementById("pg-base");
  var replies = document.getElementById("pg-replies");
  var errorBox = document.getElementById("pg-error");
  var showTemplate = document.getElementById("pg-show-template");
  var sendButton = document.getElementById("pg-send");
  var MAX_ADAPTERS = 3;

  function boxes() {
    return Array.prototype.slice.call(document.querySelectorAll(".pg-adapter"));
  }

  // Only the adapters trained on the chosen base are offered; at most three can be ticked.
  function filterAdapters() {
    boxes().forEach(function (label) {
      var match = label.getAttribute("data-base") === baseSelect.value;
      label.hidden = !match;
      if (!match) label.querySelector("input").checked = false;
    });
  }

  function limitAdapters(event) {
    var ticked = boxes().filter(function (l) { return l.querySelector("input").checked; });
    if (ticked.length > MAX_ADAPTERS && event.target.checked) {
      event.target.checked = false;
      errorBox.textContent = "Up to " + MAX_ADAPTERS + " adapters.";
    }
  }

  function toggleTemplates() {
    document.querySelectorAll(".pg-template").forEach(function (el) {
      el.hidden = !showTemplate.checked;
    });
  }

  function numberOrNull(name) {
    var value = form.elements[name].value;
    return value === "" ? null : Number(value);
  }

  function request() {
    var adapters = boxes()
      .filter(function (l) { return !l.hidden && l.querySelector("input").checked; })
      .map(function (l) { return l.querySelector("input").value; });
    var system = form.elements.system.value;
    return {
      base: baseSelect.value,
      adapters: adapters,
      prompt: form.elements.prompt.value,
      system: system === "" ? null : system,
      temperature: numberOrNull("temperature"),
      top_p: numberOrNull("top_p"),
      max_tokens: numberOrNull("max_tokens"),
      seed: numberOrNull("seed"),
    };
  }

  function makeColumns(labels) {
    replies.textContent = "";
    return labels.map(function (label, i) {
      var col = document.createElement("section");
      col.className = "pg-column";
      col.setAttribute("data-column", String(i));
      var head = document.createElement("h3");
      head.textContent = label;
      var template = document.createElement("pre");
      template.className = "pg-template";
      template.hidden = !showTemplate.checked;
      var text = document.createElement("pre");
      text.className = "pg-reply";
      var status = document.createElement("p");
      status.className = "pg-status";
      status.textContent = "streaming…";
      col.append(head, template, text, status);
      replies.appendChild(col);
      return { template: template, text: text, status: status };
    });
  }

  function detail(body) {
    if (body && Array.isArray(body.detail)) {
      return body.detail.map(function (d) { return (d.loc || []).join(".") + ": " + d.msg; })
        .join("; ");
    }
    return body && body.detail ? String(body.detail) : "request failed";
  }

  function handle(event, columns) {
    if (event.type === "columns") return makeColumns(event.columns);
    var col = columns[event.column];
    if (event.type === "prompt" && col) col.template.textContent = event.text;
    else if (event.type === "delta" && col) col.text.textContent += event.text;
    else if (event.type === "done" && col) {
      col.status.textContent = "done (" + event.finish_reason + ", " + event.tokens + " tokens)";
    } else if (event.type === "error") {
      if (col) col.status.textContent = "error: " + event.message;
      else errorBox.textContent = event.message;
    }
    return columns;
  }

  async function send(e) {
    e.preventDefault();
    errorBox.textContent = "";
    sendButton.disabled = true;
    try {
      var response = await fetch("/playground/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request()),
      });
      if (!response.ok) {
        var body = await response.json().catch(function () { return null; });
        errorBox.textContent = detail(body);
        return;
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var columns = [];
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        var parts = buffer.split("\n\n");
        buffer = parts.pop();
        parts.forEach(function (part) {
          if (part.indexOf("data: ") === 0) columns = handle(JSON.parse(part.slice(6)), columns);
        });
      }
      replies.setAttribute("data-finished", "1");
    } catch (err) {
      errorBox.textContent = String(err);
    } finally {
      sendButton.disabled = false;
    }
  }

  baseSelect.addEventListener("change", filterAdapters);
  boxes().forEach(function (l) { l.querySelector("input").addEventListener("change", limitAdapters); });
  showTemplate.addEventListener("change", toggleTemplates);
  form.addEventListener("submit", send);
  filterAdapters();
})();
