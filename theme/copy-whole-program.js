// The copy button of a code block copies the whole program, hidden lines
// included. mdBook copies only the lines a reader sees (its clipboard handler
// calls `playground_text(block, false)`, the code's innerText); here a Rust
// block shows a region of a real example with the rest hidden, and what a
// reader pastes should compile. `cargo xtask test` clicks every copy button
// and compares what it copied with the block's whole text.
(() => {
  "use strict";
  const visibleOrWhole = window.playground_text;
  if (typeof visibleOrWhole !== "function") {
    console.error("copy-whole-program.js: mdBook's playground_text() is gone; update this file");
    return;
  }
  window.playground_text = (block) => visibleOrWhole(block, true);

  for (const code of document.querySelectorAll("pre > code")) {
    const button = code.parentElement.querySelector(".clip-button");
    if (button && code.querySelector(".boring")) {
      button.title = "Copy the whole program, hidden lines included";
      button.setAttribute("aria-label", button.title);
    }
  }
})();
