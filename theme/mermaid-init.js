// Draws the book's Mermaid diagrams (mdbook-mermaid turns ```mermaid blocks into
// <pre class="mermaid">) in a Mermaid theme that follows mdBook's: `dark` for the
// navy, coal and ayu themes, `default` for light and rust. When the reader
// switches theme, the diagrams are drawn again in place; no reload.
//
// Mermaid itself (2.6 MB) is fetched only by pages that have a diagram:
// book.toml lists it so that mdBook copies it (under a hashed name, written
// where the `resource` directive below stands), and theme/index.hbs gives it
// no <script> tag of its own.
(() => {
  "use strict";
  const darkThemes = ["navy", "coal", "ayu"];
  const html = document.documentElement;
  const blocks = Array.from(document.querySelectorAll("pre.mermaid"));
  if (blocks.length === 0) return;
  // Mermaid replaces the text with an SVG; keep the source to draw again.
  for (const block of blocks) block.dataset.source = block.textContent;

  let drawnWith = null;
  async function draw() {
    const theme = darkThemes.some((t) => html.classList.contains(t)) ? "dark" : "default";
    if (theme === drawnWith) return;
    drawnWith = theme;
    // In `dark`, edge labels are #ccc on #585858, 4.4:1: under WCAG's 4.5.
    const themeVariables = theme === "dark" ? { edgeLabelBackground: "#444444" } : {};
    mermaid.initialize({ startOnLoad: false, theme, themeVariables, securityLevel: "strict" });
    for (const block of blocks) {
      block.removeAttribute("data-processed");
      block.textContent = block.dataset.source;
      block.dataset.mermaidTheme = theme;
    }
    // A diagram with a syntax error is drawn as Mermaid's error box, and the
    // promise rejects, so the browser check reports it.
    await mermaid.run({ nodes: blocks });
  }

  const script = document.createElement("script");
  // Relative to this file, as mdBook writes the directive.
  script.src = new URL("{{ resource "theme/mermaid.min.js" }}", document.currentScript.src).href;
  script.addEventListener("load", () => {
    new MutationObserver(draw).observe(html, { attributes: true, attributeFilter: ["class"] });
    draw();
  });
  script.addEventListener("error", () => console.error(`cannot load Mermaid from ${script.src}`));
  document.head.appendChild(script);
})();
