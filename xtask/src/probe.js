// Injected by `cargo xtask test` as the first script of every page it loads in
// headless Chromium (never part of the site), with axe-core right after it.
//
// `?theme=NAME` picks the mdBook theme. `?xtask=shot` only does that and
// scrolls `?scroll=SELECTOR` to the middle of the window once the diagrams are
// drawn, for a screenshot. Otherwise the probe records script errors, waits
// for Mermaid, then checks the page (and, with `?xtask-copy=1`, clicks the
// copy buttons; with `?xtask-search=1`, searches: mdBook itself reads
// `?search=`), and writes a report into <pre id="xtask-probe"> for
// `chromium --dump-dom` to hand back: one line per finding, fields separated
// by tabs (see `parse_report` in page_report.rs).
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  var shot = params.get("xtask") === "shot";

  // mdBook reads the theme from localStorage in its first inline script, which
  // runs after this one.
  var theme = params.get("theme");
  if (theme) {
    try { localStorage.setItem("mdbook-theme", theme); } catch (e) { /* reported below */ }
  }

  function oneLine(text, max) {
    return String(text).replace(/\s+/g, " ").trim().slice(0, max || 300);
  }

  var errors = [];
  function note(kind, message) {
    errors.push(kind + ": " + oneLine(message));
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

  // What a copy button put on the clipboard, whichever way it went: the async
  // Clipboard API, or `execCommand("copy")` on a selected textarea
  // (clipboard.js, which mdBook uses).
  var copied = null;
  if (!shot) {
    if (navigator.clipboard) {
      navigator.clipboard.writeText = function (text) {
        copied = String(text);
        return Promise.resolve();
      };
    }
    var execCommand = document.execCommand.bind(document);
    document.execCommand = function (command) {
      if (String(command).toLowerCase() !== "copy") {
        return execCommand.apply(document, arguments);
      }
      var el = document.activeElement;
      copied = el && typeof el.value === "string"
        ? el.value.slice(el.selectionStart, el.selectionEnd)
        : String(window.getSelection());
      return true;
    };
  }

  // The text of the elements whose ids `ids` lists (aria-labelledby and
  // aria-describedby), or of the first `fallback` child.
  function referenced(svg, attribute, fallback) {
    var ids = (svg.getAttribute(attribute) || "").split(/\s+/).filter(Boolean);
    var text = ids.map(function (id) {
      var el = document.getElementById(id);
      return el ? el.textContent : "";
    }).join(" ");
    if (!text.trim()) {
      var child = svg.querySelector(":scope > " + fallback);
      text = child ? child.textContent : "";
    }
    return oneLine(text, 120);
  }

  function diagrams() {
    return Array.prototype.map.call(document.querySelectorAll("pre.mermaid"), function (pre) {
      var svg = pre.querySelector("svg");
      var text = (svg ? svg.textContent : pre.textContent) || "";
      var failed = /Syntax error|Parse error|error in text/i.test(text) ||
        (svg && svg.querySelector(".error-icon, .error-text") !== null);
      return {
        svg: !!svg,
        error: failed ? oneLine(text, 200) : "",
        theme: pre.getAttribute("data-mermaid-theme") || "?",
        title: svg ? referenced(svg, "aria-labelledby", "title") : "",
        desc: svg ? referenced(svg, "aria-describedby", "desc") : ""
      };
    });
  }

  // Bytes the page transferred: the HTML and everything it loaded so far,
  // less the xtask's own scripts. The heaviest resources come with it.
  function weight() {
    var entries = performance.getEntriesByType("navigation")
      .concat(performance.getEntriesByType("resource"))
      .filter(function (e) { return e.name.indexOf("/__xtask_") < 0; });
    var total = entries.reduce(function (sum, e) { return sum + (e.transferSize || 0); }, 0);
    var heaviest = entries.slice().sort(function (a, b) { return b.transferSize - a.transferSize; })
      .slice(0, 4)
      .map(function (e) { return new URL(e.name).pathname + " " + Math.round(e.transferSize / 1024) + " KiB"; });
    return [String(total), heaviest.join(", ")];
  }

  // Where the page would need a sideways scroll: a code block, table, diagram
  // or image wider than the viewport that no scroll box inside <main> holds.
  // (mdBook clips or scrolls `.content` sideways, so the box must be inside.)
  // A box that scrolls itself must fit; one that lets its content spill must
  // fit with the spill, and so must each of its children.
  function overflows() {
    var width = document.documentElement.clientWidth;
    var found = [];
    var main = document.querySelector("#mdbook-content main") || document.querySelector("main");
    if (!main) return found;
    var heading = "the top";
    (function walk(el) {
      Array.prototype.forEach.call(el.children, function (child) {
        if (/^H[1-6]$/.test(child.tagName) && child.id) heading = "#" + child.id;
        var r = child.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) return;
        var spills = getComputedStyle(child).overflowX === "visible";
        var right = spills ? Math.max(r.right, r.left + child.scrollWidth) : r.right;
        if (right > width + 1 || r.left < -1) {
          found.push(describe(child) + " under " + heading + " reaches " + Math.round(right) +
            " px in a " + width + " px viewport, with no scroll box of its own");
        } else if (spills) {
          walk(child);
        }
      });
    })(main);
    var content = document.getElementById("mdbook-content");
    if (found.length === 0 && content && content.scrollWidth > content.clientWidth + 1) {
      found.push("the page content is " + content.scrollWidth + " px wide in a " +
        content.clientWidth + " px viewport");
    }
    return found;
  }

  function describe(el) {
    var block = el.closest("pre.mermaid") || el.closest("pre, table, .table-wrapper, img, svg") || el;
    var kind = block.matches("pre.mermaid") ? "diagram" :
      block.matches("pre") ? "code block" :
      block.matches("table, .table-wrapper") ? "table" :
      block.matches("img, svg") ? "image" : "<" + block.tagName.toLowerCase() + ">";
    return kind + " \"" + oneLine(block.textContent || block.getAttribute("alt") || "", 40) + "\"";
  }

  // Every Rust block's copy button must copy the whole program, hidden lines
  // included, so that what a reader pastes compiles.
  function copies() {
    return Array.prototype.map.call(document.querySelectorAll("pre > code.language-rust"), function (code, i) {
      var button = code.parentElement.querySelector(".clip-button");
      if (!button) return [String(i + 1), "fail", "no copy button"];
      copied = null;
      button.click();
      var want = code.textContent;
      if (copied === null) return [String(i + 1), "fail", "the copy button copied nothing"];
      if (copied === want) return [String(i + 1), "ok", ""];
      var got = copied.split("\n"), lines = want.split("\n"), n = 0;
      while (n < lines.length && got[n] === lines[n]) n++;
      return [String(i + 1), "fail", "copied " + got.length + " lines of " + lines.length +
        "; first difference at line " + (n + 1) + ": " + JSON.stringify(oneLine(lines[n] || "", 60))];
    });
  }

  var AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21aa", "best-practice"];

  function runAxe(then) {
    if (!window.axe) { note("axe", "axe-core did not load"); then([]); return; }
    // Hidden lines (display: none until the reader shows them) are most of
    // the DOM of a chapter that includes whole programs, and axe would spend
    // minutes on them; they are in no accessibility tree, and show in the
    // same colours as the visible lines. So they are taken out while axe
    // runs, and put back after.
    var hidden = Array.prototype.map.call(document.querySelectorAll(".hide-boring .boring"), function (el) {
      var place = [el, el.parentNode, el.nextSibling];
      el.remove();
      return place;
    });
    function putBack() {
      for (var i = hidden.length - 1; i >= 0; i--) hidden[i][1].insertBefore(hidden[i][0], hidden[i][2]);
    }
    window.axe.run(document, { runOnly: { type: "tag", values: AXE_TAGS }, resultTypes: ["violations"] })
      .then(function (result) { putBack(); then(result.violations); },
        function (e) { putBack(); note("axe", e && (e.message || e)); then([]); });
  }

  function report(lines) {
    // Every image (the charts) must have loaded and decoded to a real size.
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) {
        note("image not drawn", img.getAttribute("src") + " (complete " + img.complete +
          ", naturalWidth " + img.naturalWidth + ")");
      }
    });
    errors.forEach(function (e) { lines.push("error\t" + e); });
    lines.push("done");
    var pre = document.createElement("pre");
    pre.id = "xtask-probe";
    pre.hidden = true;
    pre.textContent = lines.join("\n");
    document.body.appendChild(pre);
  }

  function search(then) {
    if (params.get("xtask-search") !== "1") { then(0, "not asked"); return; }
    var toggle = document.getElementById("mdbook-search-toggle");
    var bar = document.getElementById("mdbook-searchbar");
    if (!toggle || !bar) { then(0, "no-search-box"); return; }
    toggle.click();
    var started = Date.now();
    (function poll() {
      bar.value = "memory";
      bar.dispatchEvent(new KeyboardEvent("keyup", { key: "y" }));
      var found = document.querySelectorAll("#mdbook-searchresults li").length;
      if (found > 0) { then(found, "ok"); return; }
      if (Date.now() - started > 10000) { then(0, "no-results-for-memory"); return; }
      setTimeout(poll, 100);
    })();
  }

  function check() {
    var lines = ["html-class\t" + document.documentElement.className];
    diagrams().forEach(function (d, i) {
      lines.push(["mermaid", i + 1, d.svg && !d.error ? "svg" : "fail", d.theme, d.title, d.desc, d.error].join("\t"));
    });
    lines.push(["weight"].concat(weight()).join("\t"));
    overflows().forEach(function (o) { lines.push("overflow\t" + o); });
    runAxe(function (violations) {
      violations.forEach(function (v) {
        var targets = v.nodes.slice(0, 3).map(function (n) { return n.target.join(" "); }).join("; ") +
          " :: " + oneLine(v.nodes[0] && v.nodes[0].failureSummary || "", 200);
        lines.push(["axe", v.impact || "none", v.id, v.nodes.length, oneLine(v.help, 120), oneLine(targets, 400)].join("\t"));
      });
      if (params.get("xtask-copy") === "1") {
        copies().forEach(function (c) { lines.push(["copy"].concat(c).join("\t")); });
      }
      lines.push(sidebarByKeyboard());
      search(function (found, why) {
        if (params.get("xtask-search") === "1") lines.push(["search", found, why].join("\t"));
        switchTheme(function (line) {
          if (line) lines.push(line);
          report(lines);
        });
      });
    });
  }

  // Enter on the sidebar toggle (a label with role="button") must toggle it.
  function sidebarByKeyboard() {
    var toggle = document.getElementById("mdbook-sidebar-toggle");
    var box = document.getElementById("mdbook-sidebar-toggle-anchor");
    if (!toggle || !box) return "ui\tsidebar\tfail\tno sidebar toggle";
    var before = box.checked;
    toggle.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
    var toggled = box.checked !== before;
    if (toggled) toggle.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
    return ["ui", "sidebar", toggled ? "ok" : "fail", toggled ? "" : "Enter on the sidebar toggle did not toggle the sidebar"].join("\t");
  }

  // On a page with diagrams in a light theme, picking navy in the theme menu
  // must draw every diagram again in Mermaid's dark theme, without a reload.
  function switchTheme(then) {
    var blocks = document.querySelectorAll("pre.mermaid");
    var navy = document.getElementById("mdbook-theme-navy");
    if (blocks.length === 0 || theme !== "light") { then(null); return; }
    if (!navy) { then("ui\ttheme-switch\tfail\tno Navy button in the theme menu"); return; }
    navy.click();
    var started = Date.now();
    (function poll() {
      var redrawn = Array.prototype.every.call(blocks, function (pre) {
        return pre.getAttribute("data-mermaid-theme") === "dark" && pre.querySelector("svg");
      });
      if (redrawn) { then("ui\ttheme-switch\tok\t"); return; }
      if (Date.now() - started > 15000) {
        then("ui\ttheme-switch\tfail\tthe diagrams were not drawn again in Mermaid's dark theme after picking Navy");
        return;
      }
      setTimeout(poll, 50);
    })();
  }

  window.addEventListener("load", function () {
    var started = Date.now();
    (function waitForMermaid() {
      var pending = diagrams().some(function (d) { return !d.svg && !d.error; });
      if (pending && Date.now() - started < 15000) { setTimeout(waitForMermaid, 50); return; }
      if (!shot) { check(); return; }
      var target = params.get("scroll") && document.querySelector(params.get("scroll"));
      if (target) target.scrollIntoView({ block: "center" });
    })();
  });
})();
