// MathJax configuration for pymdownx.arithmatex (generic mode): typeset only the spans and blocks that
// arithmatex marked, with the \( \) and \[ \] delimiters it writes. Loaded before assets/mathjax/tex-svg.js.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  },
  svg: { fontCache: "global" }
};
