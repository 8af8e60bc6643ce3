// Keyboard access that mdBook's pages lack (axe-core holds both in
// `cargo xtask test`):
// - The sidebar toggle, a <label role="button" tabindex="0"> (theme/index.hbs),
//   is pressed with Enter or Space, as a button is.
// - A code block, table or diagram wider than the column scrolls sideways. One
//   that scrolls takes focus (tabindex="0", a region with a name) so that a
//   reader without a mouse can scroll it with the arrow keys. Whether it
//   scrolls changes with the window, the fonts, hidden lines shown and a
//   diagram drawn: a ResizeObserver looks again each time.
// - A closed sidebar is `inert`. mdBook hides it from assistive technology
//   with aria-hidden, but its scroll box still takes keyboard focus (Chromium
//   makes a box that scrolls focusable): focus would land in a hidden part.
(() => {
  "use strict";
  const sidebar = document.getElementById("mdbook-sidebar");
  if (sidebar) {
    const sync = () => {
      sidebar.inert = sidebar.getAttribute("aria-hidden") === "true";
    };
    new MutationObserver(sync).observe(sidebar, { attributes: true, attributeFilter: ["aria-hidden"] });
    sync();
  }
  const toggle = document.getElementById("mdbook-sidebar-toggle");
  if (toggle) {
    toggle.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        toggle.click();
      }
    });
  }

  // "Rust code 3 (scrolls sideways)": numbered in page order, so that each
  // region's name is its own.
  function kind(el) {
    if (el.matches("pre.mermaid")) return "Diagram";
    if (el.matches(".table-wrapper")) return "Table";
    const language = Array.from(el.classList).find((c) => c.startsWith("language-"));
    const text = { "language-rust": "Rust code", "language-console": "Shell session" };
    return text[language] || "Code";
  }
  const boxes = Array.from(document.querySelectorAll("pre > code, .table-wrapper, pre.mermaid"));
  const names = new Map();
  const counts = {};
  for (const el of boxes) {
    const k = kind(el);
    counts[k] = (counts[k] || 0) + 1;
    names.set(el, `${k} ${counts[k]} (scrolls sideways)`);
  }

  function mark(el) {
    const scrolls = el.scrollWidth > el.clientWidth + 1;
    if (scrolls && !el.hasAttribute("tabindex")) {
      el.tabIndex = 0;
      el.setAttribute("role", "region");
      el.setAttribute("aria-label", names.get(el));
      el.dataset.scrollFocus = "";
    } else if (!scrolls && "scrollFocus" in el.dataset) {
      for (const a of ["tabindex", "role", "aria-label", "data-scroll-focus"]) el.removeAttribute(a);
    }
  }

  const observer = new ResizeObserver((entries) => entries.forEach((e) => mark(e.target)));
  for (const el of boxes) {
    mark(el);
    observer.observe(el);
  }
})();
