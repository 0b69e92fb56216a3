/* Keyboard-only rating: rows by ↑/↓, j/k or 1–9; a/s/d (←/→) choose left/tie/right, b "both bad" where the
 * campaign offers it; Enter submits when complete; x opens the skip form and focuses its reason; f/g open the
 * left/right answer's flag form at its reason; Escape closes an open flag or skip form and goes back to the rows.
 * The radio inputs stay the real form controls: every shortcut checks and focuses one of them. */
(function () {
  "use strict";

  var SIDES = { a: "left", arrowleft: "left", s: "tie", d: "right", arrowright: "right", b: "both_bad" };
  var FLAGS = { f: "left", g: "right" };
  // A key pressed between an HTMX swap and its settle already acts on the new pair: settling must not then move
  // the focus back to the first row (a fast "x" would lose its skip form, a fast "b" its row).
  var keyedSinceSwap = false;

  function form() {
    return document.querySelector("form[data-keyboard-rating]");
  }

  function rows(rubric) {
    return Array.prototype.slice.call(rubric.querySelectorAll("tr.criterion"));
  }

  function currentIndex(rubric) {
    var list = rows(rubric);
    var active = document.activeElement;
    for (var i = 0; i < list.length; i++) {
      if (list[i].contains(active)) return i;
    }
    for (var j = 0; j < list.length; j++) {
      if (list[j].classList.contains("current")) return j;
    }
    return -1;
  }

  function focusRow(rubric, index, keepScroll) {
    var list = rows(rubric);
    if (!list.length) return;
    index = Math.max(0, Math.min(list.length - 1, index));
    list.forEach(function (row, i) {
      row.classList.toggle("current", i === index);
    });
    var radio = list[index].querySelector("input[type=radio]:checked") || list[index].querySelector("input[type=radio]");
    radio.focus({ preventScroll: true });
    if (!keepScroll) list[index].scrollIntoView({ block: "nearest" });
  }

  function choose(rubric, index, side) {
    var row = rows(rubric)[index];
    var radio = row.querySelector("input[type=radio][value=" + side + "]");
    if (!radio) return; // "both bad" in a campaign that does not offer it
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    announce(rubric, "");
    var list = rows(rubric);
    focusRow(rubric, index + 1 < list.length ? index + 1 : index);
  }

  function missing(rubric) {
    return rows(rubric).filter(function (row) {
      return !row.querySelector("input[type=radio]:checked");
    });
  }

  function announce(rubric, text) {
    var status = rubric.querySelector(".keyboard-status");
    if (status) status.textContent = text;
  }

  function submit(rubric) {
    var open = missing(rubric);
    if (open.length) {
      var label = open[0].querySelector(".label");
      announce(rubric, "Choose left, tie or right for every row first" + (label ? " (" + label.textContent + ")." : "."));
      focusRow(rubric, rows(rubric).indexOf(open[0]));
      return;
    }
    announce(rubric, "Submitting…");
    if (rubric.requestSubmit) rubric.requestSubmit();
    else rubric.submit();
  }

  function openSkip() {
    var panel = document.getElementById("skip");
    var reason = document.getElementById("skip-reason");
    if (!panel || !reason) return;
    panel.open = true;
    reason.focus();
  }

  function openFlag(side) {
    var panel = document.getElementById("flag-" + side);
    var reason = document.getElementById("flag-reason-" + side);
    if (!panel || !reason) return;
    panel.open = true;
    reason.focus();
  }

  function isTextEntry(element) {
    if (!element || !element.tagName) return false;
    var tag = element.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || element.isContentEditable) return true;
    return tag === "input" && ["radio", "checkbox", "submit", "button"].indexOf(element.type) === -1;
  }

  document.addEventListener("keydown", function (event) {
    var rubric = form();
    if (!rubric || event.altKey || event.ctrlKey || event.metaKey || event.defaultPrevented) return;
    keyedSinceSwap = true;
    var target = event.target;
    var panel = target.closest && target.closest("details.flag, details.skip");
    if (event.key === "Escape" && panel) {
      event.preventDefault();
      panel.open = false;
      var current = currentIndex(rubric);
      focusRow(rubric, current < 0 ? 0 : current);
      return;
    }
    if (isTextEntry(target)) return;
    var inRubric = rubric.contains(target);
    // Elsewhere on the page (links, the log-out button) only letters and digits are shortcuts.
    // A scrollable answer keeps its arrow keys for scrolling.
    var onOtherControl = !inRubric && target !== document.body && target.matches("a, button, summary, .scroll");
    var key = event.key.toLowerCase();
    var index = currentIndex(rubric);

    if (key === "arrowdown" || key === "j" || key === "arrowup" || key === "k") {
      if (onOtherControl && key.indexOf("arrow") === 0) return;
      event.preventDefault();
      var step = key === "arrowdown" || key === "j" ? 1 : -1;
      focusRow(rubric, index < 0 ? 0 : index + step);
    } else if (/^[1-9]$/.test(key) && Number(key) <= rows(rubric).length) {
      event.preventDefault();
      focusRow(rubric, Number(key) - 1);
    } else if (Object.prototype.hasOwnProperty.call(SIDES, key)) {
      if (onOtherControl && key.indexOf("arrow") === 0) return;
      event.preventDefault();
      choose(rubric, index < 0 ? 0 : index, SIDES[key]);
    } else if (key === "x") {
      event.preventDefault();
      openSkip();
    } else if (Object.prototype.hasOwnProperty.call(FLAGS, key)) {
      event.preventDefault();
      openFlag(FLAGS[key]);
    } else if (key === "enter" && (inRubric ? target.type === "radio" : !onOtherControl)) {
      event.preventDefault();
      submit(rubric);
    }
  });

  function start() {
    var rubric = form();
    if (rubric) {
      focusRow(rubric, 0, true);
    } else {
      var title = document.getElementById("pair-title");
      if (title) title.focus({ preventScroll: true });
    }
  }

  // After HTMX swaps in the next pair (or the done message), keyboard focus moves to its first row.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (!event.target || event.target.id !== "pair") return;
    keyedSinceSwap = false;
    // HTMX wires up swapped-in forms only when they settle; a key pressed before that (Enter, or Enter in the
    // skip reason) would post the form natively and reload the page. Wire them now; HTMX skips them later.
    window.htmx.process(event.target);
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "pair" && !keyedSinceSwap) start();
  });
  document.addEventListener("htmx:responseError", function () {
    var rubric = form();
    if (rubric) announce(rubric, "Could not submit; please try again.");
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
