// Tab bars over anchored panels (<nav class="tabs"> links to the ids of the panels in the following .tabbed box).
// The panels switch by CSS alone (:target); this only marks the tab of the panel shown, for sight and for screen
// readers, on load and whenever the address's #fragment changes.
(function () {
  "use strict";
  function mark(nav) {
    var links = Array.prototype.slice.call(nav.querySelectorAll("a[href^='#']"));
    var current = links.filter(function (link) { return link.getAttribute("href") === window.location.hash; })[0];
    current = current || links[0];
    links.forEach(function (link) {
      if (link === current) { link.setAttribute("aria-current", "true"); } else { link.removeAttribute("aria-current"); }
    });
  }
  function markAll() { document.querySelectorAll("nav.tabs[data-panels]").forEach(mark); }
  document.addEventListener("DOMContentLoaded", markAll);
  window.addEventListener("hashchange", markAll);
})();
