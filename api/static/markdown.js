// Answers shown as Markdown, safely: marked (vendored) turns the text into HTML, and DOMPurify
// (vendored) keeps only the tags Markdown makes. An answer is untrusted text (a prompt can make
// a model write anything), so no script, event handler, form or image survives: nothing in an
// answer can run, or make the browser fetch an address of the answer's choosing.
"use strict";

const MARKDOWN_TAGS = [
  "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
  "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
];
const MARKDOWN_ATTRIBUTES = ["href", "title", "class", "start", "align"];

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank"); // a link never replaces the conversation
    node.setAttribute("rel", "noopener noreferrer");
  }
});

function renderMarkdown(element, text) {
  const html = marked.parse(text, { gfm: true, breaks: true, async: false }).trim();
  element.innerHTML = DOMPurify.sanitize(html, {
    ALLOWED_TAGS: MARKDOWN_TAGS,
    ALLOWED_ATTR: MARKDOWN_ATTRIBUTES,
  });
}
