// Shared helpers: the page's CSRF token on every state-changing fetch().
"use strict";
window.maskwatch = window.maskwatch || {};
window.maskwatch.csrfToken = function () {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
};
window.maskwatch.fetch = function (url, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  opts.headers = Object.assign({ "X-CSRF-Token": window.maskwatch.csrfToken() }, opts.headers || {});
  return fetch(url, opts);
};
// "unknown": the face was too dark, blurred or small to judge, or the classifier kept
// changing its mind about it (not a class of the model).
window.maskwatch.MASK_LABELS = { with_mask: "mask", without_mask: "no mask", mask_incorrect: "mask below nose", unknown: "cannot judge" };
window.maskwatch.MASK_COLORS = { with_mask: "#3cb43c", without_mask: "#dc2828", mask_incorrect: "#ffa000", unknown: "#808080" };
