"""Presenter mode for a projector: one screen per view, large high-contrast text, keyboard stepping, slide export.

Everything here runs in the visitor's browser (CSS and one script in the page's head), so stepping
through a talk costs the server only the redraws it already does:

- With presenter mode on, the title and model line fold away, the prompt shrinks to one line that
  stays at the top with the tab bar, the examples and each tab's explanation fold to one line (a
  click opens them), and the active tab's main figure (`registry.Tab.figure`) is scrolled to sit just
  under the bar, whole, whenever it is drawn or the tab changes. Figures cap their height to fit
  1280 x 720 (`figures.base.PRESENTER_MAX_HEIGHT`).
- Keys (ignored while typing in a box): each tab's `KEYS` (`ui.Key`), e.g. arrows for head and
  layer on Attention, position on the logit lens and RoPE, sample / back on the Sampler; PageUp and
  PageDown do what Left and Right do (a presenter's clicker sends them). `[` and `]` change tab,
  `p` toggles presenter mode, `s` downloads the main figure as a 16:9 PNG slide, `v` as SVG, `?`
  shows the keys, Escape hides them.
- Prepared links carry the view: each tab's `LINKS` (`ui.Link`) name the controls a query may set
  (`?tab=attention&layer=3&head=5`, `?tab=lens&pos=7`, `?tab=sampler&temperature=0.7&top_p=0.9&gen=12,873`);
  they are applied once the tab has drawn, and the page's "link to this view" always carries their current
  values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

SLIDE_SIZE = (1920, 1080)  # the PNG/SVG slide, 16:9

CSS = """
body.presenter { --body-text-color: #000; --block-label-text-color: #000; --block-info-text-color: #000;
  --body-text-color-subdued: #111; }
body.presenter .gradio-container { font-size: 20px !important; overflow: clip !important; }
body.presenter .gradio-container label, body.presenter .gradio-container .prose,
body.presenter .gradio-container button, body.presenter .gradio-container textarea {
  font-size: 20px !important; color: #000; }
/* Nothing smaller than 18 px, and no light grey text, anywhere on the page. */
body.presenter .gradio-container * { font-size: max(18px, 1em) !important; }
body.presenter .gradio-container input[type=number] { font-size: 18px !important; color: #000; }
body.presenter .hint, body.presenter .dec-note, body.presenter .gen .prompt { color: #111 !important; }
body.presenter [data-testid="block-info"], body.presenter .gradio-container label span { color: #000 !important; }
body.presenter .gradio-container ::placeholder { color: #333 !important; }
body.presenter .tokens .tok { outline: 1px solid #000; }
/* One screen per view: the header folds to the prompt line, which stays on top with the tab bar. */
body.presenter #title, body.presenter #model-line, body.presenter #status { display: none; }
body.presenter #top { position: sticky; top: 0; z-index: 1000; background: var(--body-background-fill, #fff);
  padding: 4px 0; }
body.presenter #prompt [data-testid="block-info"], body.presenter #prompt .hint { display: none; }
/* One line where it fits; on a narrow screen the buttons wrap below rather than off the edge. (Gradio keeps only
   the never-matching prefixed copy of a rule inside @media, so no media query here.) */
body.presenter #prompt-row { align-items: center; flex-wrap: wrap; }
body.presenter #prompt-side { flex: 0 1 auto !important; width: auto !important; min-width: 0 !important;
  flex-direction: row !important; flex-wrap: wrap; align-items: center; gap: 8px; }
body.presenter #prompt-side > * { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important; }
body.presenter #chat { display: none; }
body.presenter #large { padding: 6px 10px; }
body.presenter #large label > span { display: none; }
body.presenter #large label::after { content: "Presenter"; font-size: 18px; }
body.presenter .tokens .tok .id, body.presenter .tokens .raw { font-size: 18px !important; color: #000; }
body.presenter #slide-buttons { display: flex !important; flex-wrap: nowrap; gap: 6px; }
body.presenter #slide-buttons > *, body.presenter #slide-buttons button { flex: 0 0 auto !important;
  width: auto !important; min-width: max-content !important; }
body.presenter .tabs > .tab-wrapper { position: sticky; top: var(--presenter-top, 64px); z-index: 999;
  background: var(--body-background-fill, #fff); }
body.presenter [role=tablist] { flex-wrap: wrap; }
body.presenter [role=tablist] button { font-size: 18px !important; padding: 4px 6px; color: #000; }
body.presenter .intro { display: -webkit-box; -webkit-line-clamp: 1; -webkit-box-orient: vertical; overflow: hidden;
  cursor: pointer; border-left: 4px solid #000; padding-left: 8px; }
body.presenter .intro.open { display: block; }
body:not(.presenter) #slide-buttons { display: none !important; }
#samp-continuation { display: none !important; }
#key-help { position: fixed; right: 24px; bottom: 24px; z-index: 2000; background: #fff; color: #000;
  border: 3px solid #000; border-radius: 8px; padding: 16px 20px; font-size: 20px; max-width: 560px;
  box-shadow: 0 4px 24px rgba(0, 0, 0, .3); }
#key-help table { border-collapse: collapse; }
#key-help td { padding: 2px 10px; vertical-align: top; font-size: 20px; }
#key-help kbd { border: 2px solid #000; border-radius: 4px; padding: 0 6px; font-family: inherit; font-weight: 600; }
"""

_SCRIPT = """
<script>
(() => {
  const FIGURES = __FIGURES__;
  const KEYS = __KEYS__;
  const LINKS = __LINKS__;
  const LABELS = __LABELS__;
  const SLIDE = __SLIDE__;
  const GLOBAL = [["[ ]", "previous / next tab"], ["p", "presenter mode on / off"],
                  ["s", "download the main figure as a 16:9 PNG slide"], ["v", "… as SVG"], ["?", "these keys"],
                  ["Esc", "hide them"]];
  const presenter = () => document.body.classList.contains("presenter");
  const activeTab = () => {
    const tab = document.querySelector('[role=tab][aria-selected=true]');
    return tab ? tab.dataset.tabId : null;
  };
  const stickyHeight = () => {
    const top = document.getElementById("top");
    const bar = document.querySelector(".tabs > .tab-wrapper");
    const h = top ? top.getBoundingClientRect().height : 0;
    document.documentElement.style.setProperty("--presenter-top", h + "px");
    return h + (bar ? bar.getBoundingClientRect().height : 0);
  };
  // Presenter mode: scroll the main figure to sit whole under the sticky bar.
  const focusFigure = () => {
    if (!presenter()) return;
    const el = document.getElementById(FIGURES[activeTab()] || "");
    if (!el || el.getBoundingClientRect().height < 20) return;
    const y = el.getBoundingClientRect().top + window.scrollY - stickyHeight() - 6;
    window.scrollTo({top: Math.max(0, y), behavior: "instant"});
  };
  const soon = () => [150, 600, 1500].forEach(t => setTimeout(focusFigure, t));
  window.playgroundFocus = soon;
  const watch = new ResizeObserver(() => { if (presenter()) setTimeout(focusFigure, 50); });
  const observeFigures = () => Object.values(FIGURES).forEach(id => {
    const el = document.getElementById(id);
    if (el && !el.dataset.watched) { el.dataset.watched = "1"; watch.observe(el); }
  });
  setInterval(observeFigures, 1000);
  new MutationObserver(() => { if (presenter()) soon(); })
    .observe(document.body, {attributes: true, attributeFilter: ["class"]});
  document.addEventListener("click", (e) => {
    const intro = e.target.closest && e.target.closest(".intro");
    if (intro && presenter()) intro.classList.toggle("open");
    if (e.target.closest && e.target.closest("[role=tab]")) soon();
  });
  // Steps: a slider moved by its step, or a button clicked.
  const step = (key) => {
    const target = document.getElementById(key.target);
    if (!target) return false;
    if (key.step === null) {
      const button = target.tagName === "BUTTON" ? target : target.querySelector("button");
      if (button) button.click();
      return !!button;
    }
    const range = target.querySelector("input[type=range]");
    if (!range) return false;
    const value = Math.min(Number(range.max), Math.max(Number(range.min), Number(range.value) + key.step));
    if (value === Number(range.value)) return true;
    range.value = String(value);
    range.dispatchEvent(new Event("input", {bubbles: true}));
    range.dispatchEvent(new Event("change", {bubbles: true}));
    return true;
  };
  const switchTab = (delta) => {
    const tabs = [...document.querySelectorAll("[role=tab]")];
    const i = tabs.findIndex(t => t.getAttribute("aria-selected") === "true");
    const next = tabs[(i + delta + tabs.length) % tabs.length];
    if (next) { next.click(); soon(); }
  };
  const slide = (format) => {
    const tab = activeTab();
    const el = document.getElementById(FIGURES[tab] || "");
    const plot = el && el.querySelector(".js-plotly-plot");
    const name = "playground-" + tab;
    if (plot && window.Plotly) {
      window.Plotly.downloadImage(plot, {format: format, width: SLIDE[0], height: SLIDE[1], filename: name});
      return;
    }
    const img = el && el.querySelector("img");
    if (img) {
      const a = document.createElement("a");
      a.href = img.src; a.download = name + ".png"; a.click();
      return;
    }
    alert("This tab's main view is text, not a plot: take a screenshot of it instead.");
  };
  window.playgroundSlide = slide;
  const help = () => {
    let box = document.getElementById("key-help");
    if (box) { box.remove(); return; }
    box = document.createElement("div");
    box.id = "key-help";
    const tab = activeTab();
    const rows = (KEYS[tab] || []).map(k => [k.keys.map(name).join(" "), k.says]).concat(GLOBAL);
    box.innerHTML = "<strong>Keys" + (LABELS[tab] ? " on " + LABELS[tab] : "") + "</strong><table>" +
      rows.map(([k, s]) => "<tr><td>" + k.split(" ").map(x => "<kbd>" + x + "</kbd>").join(" ") + "</td><td>" + s +
               "</td></tr>").join("") + "</table>";
    document.body.appendChild(box);
  };
  // Prepared links: ?layer=3&head=5&pos=7, the sampler's settings, gen=12,873 (its continuation). Applied once,
  // after the linked tab has drawn; "link to this view" carries the current values.
  const valueOf = (link) => {
    const el = document.getElementById(link.target);
    if (!el) return null;
    if (link.kind === "slider") { const r = el.querySelector("input[type=range]"); return r ? r.value : null; }
    if (link.kind === "number") { const n = el.querySelector("input"); return n ? n.value : null; }
    if (link.kind === "radio") { const c = el.querySelector("input:checked"); return c ? c.value : null; }
    if (link.param === "gen") {
      const ids = [...document.querySelectorAll("#samp-text .gtok[data-id]")].map(t => t.dataset.id);
      return ids.length ? ids.join(",") : null;
    }
    return null;
  };
  const setValue = (link, value) => {
    const el = document.getElementById(link.target);
    if (!el) return;
    const fire = (input) => ["input", "change"].forEach(t => input.dispatchEvent(new Event(t, {bubbles: true})));
    if (link.kind === "slider") {
      const r = el.querySelector("input[type=range]");
      if (!r) return;
      r.value = String(Math.min(Number(r.max), Math.max(Number(r.min), Number(value))));
      fire(r);
    } else if (link.kind === "radio") {
      const option = [...el.querySelectorAll("input[type=radio]")].find(o => o.value === value);
      if (option) option.click();
    } else {
      const input = el.querySelector("textarea, input");
      if (!input) return;
      input.value = value;
      fire(input);
      if (link.kind === "number") input.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
    }
  };
  const applyLink = async () => {
    const params = new URLSearchParams(location.search);
    const wanted = Object.values(LINKS).flat().some(l => params.has(l.param));
    if (!wanted) return;
    const wait = (ms) => new Promise(r => setTimeout(r, ms));
    for (let i = 0; i < 360; i++) {  // until the page shows the linked tab and it has drawn its main figure
      const tab = activeTab();
      const fig = tab && document.getElementById(FIGURES[tab] || "");
      if (tab === (params.get("tab") || tab) && fig && fig.getBoundingClientRect().height > 20 &&
          fig.querySelector(".js-plotly-plot, img, .tok, p")) break;
      await wait(250);
    }
    await wait(800);
    const links = (LINKS[activeTab()] || []).filter(l => params.has(l.param));
    const last = links.filter(l => l.param === "gen");
    for (const link of links.filter(l => l.param !== "gen").concat(last)) {
      setValue(link, params.get(link.param));
      await wait(link.param === "gen" ? 0 : 400);
    }
  };
  // Gradio may add this script after the page has loaded: run now in that case.
  if (document.readyState === "complete") setTimeout(applyLink, 500);
  else window.addEventListener("load", () => setTimeout(applyLink, 500));
  const shareLink = () => {
    const box = document.getElementById("share-link");
    const a = box && box.querySelector("a");
    if (!a) return;
    const base = new URL(a.getAttribute("href").split("#")[0], location.href);
    const params = new URLSearchParams(base.search);
    for (const link of LINKS[activeTab()] || []) {
      const v = valueOf(link);
      if (v === null || v === "") params.delete(link.param); else params.set(link.param, v);
    }
    const query = "?" + params.toString();
    if (a.getAttribute("href") !== query) {
      a.setAttribute("href", query);
      const code = a.querySelector("code") || a;
      code.textContent = query.length > 61 ? query.slice(0, 60) + "…" : query;
    }
  };
  setInterval(shareLink, 700);
  const name = (k) => ({ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑", ArrowDown: "↓", PageUp: "PgUp",
                        PageDown: "PgDn"})[k] || k;
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    const tab = activeTab();
    const own = (KEYS[tab] || []).find(k => k.keys.includes(e.key));
    let done = false;
    if (own) done = step(own);
    else if (e.key === "?") { help(); done = true; }
    else if (e.key === "Escape") { const b = document.getElementById("key-help"); if (b) b.remove(); done = !!b; }
    else if (e.key === "[" || e.key === "]") { switchTab(e.key === "]" ? 1 : -1); done = true; }
    else if (e.key === "p") { const box = document.querySelector("#large input"); if (box) box.click(); done = !!box; }
    else if (e.key === "s" || e.key === "v") { slide(e.key === "s" ? "png" : "svg"); done = true; }
    if (done) e.preventDefault();
  });
})();
</script>
"""


def head(tabs: Sequence) -> str:
    """The page's head script for these tabs (`registry.TABS`): their main figures and keys."""
    figures = {tab.id: tab.figure for tab in tabs}
    keys = {tab.id: [{"keys": list(k.keys), "target": k.target, "step": k.step, "says": k.says} for k in tab.keys]
            for tab in tabs}
    labels = {tab.id: tab.label for tab in tabs}
    links = {tab.id: [{"param": k.param, "target": k.target, "kind": k.kind} for k in tab.links] for tab in tabs}
    return (_SCRIPT.replace("__FIGURES__", json.dumps(figures)).replace("__KEYS__", json.dumps(keys))
            .replace("__LINKS__", json.dumps(links))
            .replace("__LABELS__", json.dumps(labels)).replace("__SLIDE__", json.dumps(list(SLIDE_SIZE))))
