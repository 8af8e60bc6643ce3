// Injected by `cargo xtask test` as the first script of every page it loads in
// headless Chromium (never part of the site). It records script errors, waits
// for Mermaid, opens the search and types a query, then writes a report into
// <pre id="xtask-probe"> for `chromium --dump-dom` to hand back.
(function () {
  "use strict";
  var errors = [];
  function note(kind, message) {
    errors.push(kind + ": " + String(message).replace(/\s+/g, " ").slice(0, 300));
  }
  window.addEventListener("error", function (e) {
    var el = e.target;
    if (el && el !== window && (el.src || el.href)) {
      note("failed to load", el.src || el.href);
    } else {
      note("script error", (e.message || "error") + " at " + (e.filename || "?") + ":" + (e.lineno || 0));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    var r = e.reason;
    note("unhandled rejection", r && (r.message || r));
  });
  var consoleError = console.error;
  console.error = function () {
    note("console.error", Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };

  // mdBook reads the theme from localStorage in its first inline script, which
  // runs after this one.
  var theme = new URLSearchParams(location.search).get("theme");
  if (theme) {
    try { localStorage.setItem("mdbook-theme", theme); } catch (e) { note("localStorage", e); }
  }

  function diagrams() {
    return Array.prototype.map.call(document.querySelectorAll("pre.mermaid"), function (pre) {
      var svg = pre.querySelector("svg");
      var text = (svg ? svg.textContent : pre.textContent) || "";
      var failed = /Syntax error|Parse error|error in text/i.test(text) ||
        (svg && svg.querySelector(".error-icon, .error-text") !== null);
      return {
        svg: !!svg,
        error: failed ? text.replace(/\s+/g, " ").slice(0, 200) : "",
        theme: pre.getAttribute("data-mermaid-theme") || "?"
      };
    });
  }

  function report(found, searchNote) {
    var lines = ["html-class " + document.documentElement.className];
    diagrams().forEach(function (d, i) {
      lines.push("mermaid " + (i + 1) + " " + (d.svg && !d.error ? "svg" : "fail") +
        " " + d.theme + " " + d.error);
    });
    lines.push("search " + found + " " + searchNote);
    // Every image (the charts) must have loaded and decoded to a real size.
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) {
        note("image not drawn", img.getAttribute("src") + " (complete " + img.complete +
          ", naturalWidth " + img.naturalWidth + ")");
      }
    });
    errors.forEach(function (e) { lines.push("error " + e); });
    lines.push("done");
    var pre = document.createElement("pre");
    pre.id = "xtask-probe";
    pre.textContent = lines.join("\n");
    document.body.appendChild(pre);
  }

  function checkSearch() {
    var toggle = document.getElementById("mdbook-search-toggle");
    var bar = document.getElementById("mdbook-searchbar");
    if (!toggle || !bar) { report(0, "no-search-box"); return; }
    toggle.click();
    var started = Date.now();
    (function poll() {
      bar.value = "memory";
      bar.dispatchEvent(new KeyboardEvent("keyup", { key: "y" }));
      var found = document.querySelectorAll("#mdbook-searchresults li").length;
      if (found > 0) { report(found, "ok"); return; }
      if (Date.now() - started > 10000) { report(0, "no-results-for-memory"); return; }
      setTimeout(poll, 100);
    })();
  }

  window.addEventListener("load", function () {
    var started = Date.now();
    (function waitForMermaid() {
      var pending = diagrams().some(function (d) { return !d.svg && !d.error; });
      if (pending && Date.now() - started < 15000) { setTimeout(waitForMermaid, 50); return; }
      checkSearch();
    })();
  });
})();
