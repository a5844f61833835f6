// tunesmith board: live line charts fed by server-sent events, and the runs list's refresh.
// No dependencies and no network beyond the board itself. Charts follow report/charts.py:
// <svg class="chart line-chart" data-chart=ID>, one <polyline class="series" data-series=NAME
// data-points=N> per series (a single point is a <circle>), so tests can count the points.
(function () {
  "use strict";

  var PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2"];

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function niceTicks(lo, hi, count) {
    if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
    if (hi <= lo) {
      var pad = Math.abs(lo) * 0.05 || 0.5;
      lo -= pad;
      hi += pad;
    }
    var raw = (hi - lo) / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
      .find(function (s) { return s >= raw; });
    var ticks = [];
    for (var v = Math.floor(lo / step) * step; v < hi + step * 0.999; v += step) {
      ticks.push(Math.round(v * 1e12) / 1e12);
    }
    return ticks;
  }

  function fmt(v) {
    if (v === 0) return "0";
    if (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3) return v.toExponential(1);
    return String(Number(v.toPrecision(4)));
  }

  // series: [{name, points: [[x, y], ...]}]
  function lineChart(id, title, series) {
    var width = 460, height = 260, left = 58, right = 14, bottom = 40;
    var shown = series.filter(function (s) { return s.points.length > 0; });
    var legendRows = shown.length > 1 ? Math.ceil(shown.length / 3) : 0;
    var top = 28 + 16 * legendRows, w = width - left - right, h = height - top - bottom;
    var out = ['<svg class="chart line-chart" data-chart="' + esc(id) + '" role="img" ' +
      'aria-label="' + esc(title) + '" xmlns="http://www.w3.org/2000/svg" width="' + width +
      '" height="' + height + '" viewBox="0 0 ' + width + " " + height + '">',
      '<text x="0" y="16" font-weight="bold">' + esc(title) + "</text>"];
    if (!shown.length) {
      out.push('<text x="' + left + '" y="' + (top + 20) + '">no data yet</text></svg>');
      return out.join("");
    }
    var xs = [], ys = [];
    shown.forEach(function (s) {
      s.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); });
    });
    var xt = niceTicks(Math.min.apply(null, xs), Math.max.apply(null, xs), 5);
    var yt = niceTicks(Math.min.apply(null, ys), Math.max.apply(null, ys), 5);
    var x0 = xt[0], x1 = xt[xt.length - 1], y0 = yt[0], y1 = yt[yt.length - 1];
    function X(x) { return left + (x - x0) / (x1 - x0) * w; }
    function Y(y) { return top + h - (y - y0) / (y1 - y0) * h; }
    out.push('<rect x="' + left + '" y="' + top + '" width="' + w + '" height="' + h +
      '" fill="none" stroke="#888"/>');
    yt.forEach(function (t) {
      out.push('<line x1="' + left + '" y1="' + Y(t).toFixed(1) + '" x2="' + (left + w) +
        '" y2="' + Y(t).toFixed(1) + '" stroke="#eee"/><text x="' + (left - 5) + '" y="' +
        (Y(t) + 4).toFixed(1) + '" text-anchor="end">' + fmt(t) + "</text>");
    });
    xt.forEach(function (t) {
      out.push('<text x="' + X(t).toFixed(1) + '" y="' + (top + h + 14) +
        '" text-anchor="middle">' + fmt(t) + "</text>");
    });
    shown.forEach(function (s, i) {
      var color = PALETTE[i % PALETTE.length];
      var attrs = 'class="series" data-series="' + esc(s.name) + '" data-points="' +
        s.points.length + '"';
      if (s.points.length === 1) {
        out.push("<circle " + attrs + ' cx="' + X(s.points[0][0]).toFixed(1) + '" cy="' +
          Y(s.points[0][1]).toFixed(1) + '" r="3.5" fill="' + color + '"/>');
      } else {
        var coords = s.points.map(function (p) {
          return X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1);
        }).join(" ");
        out.push("<polyline " + attrs + ' points="' + coords + '" fill="none" stroke="' +
          color + '" stroke-width="1.6"/>');
      }
      if (legendRows) {
        var lx = (i % 3) * Math.floor(width / 3), ly = 24 + 16 * Math.floor(i / 3);
        out.push('<rect x="' + lx + '" y="' + ly + '" width="10" height="10" fill="' + color +
          '"/><text x="' + (lx + 14) + '" y="' + (ly + 9) + '">' + esc(s.name.slice(0, 40)) +
          "</text>");
      }
    });
    out.push('<text x="' + (left + w / 2) + '" y="' + (height - 6) +
      '" text-anchor="middle">step</text></svg>');
    return out.join("");
  }

  // ------------------------------------------------------------------ a run's live curves
  function liveRun(root) {
    var charts = Array.prototype.slice.call(root.querySelectorAll(".live-chart"));
    var rows = [];
    var pending = false;
    var status = document.getElementById("live-status");

    function number(v) { return typeof v === "number" && isFinite(v); }

    // [split, key, label] -> series; a key ending in "*" takes every "<prefix>..._mean" key
    function seriesFor(spec) {
      var split = spec[0], key = spec[1], label = spec[2];
      var keys = [key];
      if (key.slice(-1) === "*") {
        var prefix = key.slice(0, -1), seen = {};
        keys = [];
        rows.forEach(function (r) {
          if ((r.split || "train") !== split) return;
          Object.keys(r).forEach(function (k) {
            if (k.indexOf(prefix) === 0 && k.slice(-5) === "_mean" && !seen[k]) {
              seen[k] = true;
              keys.push(k);
            }
          });
        });
      }
      return keys.map(function (k) {
        var points = rows.filter(function (r) {
          return (r.split || "train") === split && number(r[k]) && number(r.step);
        }).map(function (r) { return [r.step, r[k]]; });
        return { name: key.slice(-1) === "*" ? k : label, points: points };
      });
    }

    function draw() {
      pending = false;
      charts.forEach(function (div) {
        var specs = JSON.parse(div.getAttribute("data-series"));
        var series = [];
        specs.forEach(function (spec) { series = series.concat(seriesFor(spec)); });
        var hasData = series.some(function (s) { return s.points.length > 0; });
        div.hidden = !hasData && div.getAttribute("data-chart") !== "loss";
        div.innerHTML = lineChart(div.getAttribute("data-chart"), div.getAttribute("data-title"),
          series);
      });
    }

    function schedule() {
      if (!pending) {
        pending = true;
        window.requestAnimationFrame(draw);
      }
    }

    var source = new EventSource(root.getAttribute("data-events"));
    source.onmessage = function (e) {
      try {
        rows.push(JSON.parse(e.data));
      } catch (err) {
        return;
      }
      schedule();
    };
    source.addEventListener("ready", function () {
      if (status) status.textContent = "live: " + rows.length + " metrics line(s) so far";
      schedule();
    });
    source.addEventListener("end", function (e) {
      if (status) status.textContent = "run ended (" + JSON.parse(e.data).state + ")";
      source.close();
    });
    source.onerror = function () {
      if (status && source.readyState === EventSource.CLOSED) status.textContent = "disconnected";
    };
    draw();
  }

  function autoRefresh(div) {
    if (div.getAttribute("data-autorefresh") === "1") {
      window.setTimeout(function () { window.location.reload(); }, 5000);
    }
  }

  window.tunesmithBoard = { lineChart: lineChart, esc: esc };

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) liveRun(live);
    var runs = document.getElementById("runs");
    if (runs) autoRefresh(runs);
  });
})();
