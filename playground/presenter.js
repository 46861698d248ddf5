// Presenter mode, keys, slides and prepared links, all in the visitor's browser (see presenter.py, which puts this
// file in the page's head after its configuration, one JSON object: window.PLAYGROUND_CONFIG = {figures, keys,
// links, labels, slide}). It knows no tab: each tab's main figure, keys and link parameters come from that object.
// The pure helpers at the top are unit-tested with Node (tests/playground/presenter.test.js); `start` wires the page.
const PlaygroundPresenter = (() => {
  const GLOBAL_KEYS = [["[ ]", "previous / next tab"], ["p", "presenter mode on / off"],
                       ["s", "download the main figure as a 16:9 PNG slide"], ["v", "… as SVG"], ["?", "these keys"],
                       ["Esc", "hide them"]];
  const KEY_NAMES = {ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑", ArrowDown: "↓", PageUp: "PgUp", PageDown: "PgDn"};

  // -- pure helpers ------------------------------------------------------------------------------------------------

  /** A slider's value after one step, kept in [min, max]. */
  const stepValue = (value, min, max, step) => Math.min(max, Math.max(min, value + step));

  /** How a key is shown in the help box. */
  const keyName = (key) => KEY_NAMES[key] || key;

  /** The links a query sets, in the order to apply them: those marked `last` (they depend on the others) last. */
  const linksToApply = (links, params) => {
    const present = links.filter((l) => params.has(l.param));
    return present.filter((l) => !l.last).concat(present.filter((l) => l.last));
  };

  /** The query of "link to this view": the server's link (prompt, tab, presenter mode) with each link parameter
   *  of the tab set to its current value (`values`: param -> value, null or "" when the control has none). */
  const shareQuery = (href, values) => {
    const params = new URLSearchParams(href.split("#")[0].split("?")[1] || "");
    for (const [param, value] of Object.entries(values)) {
      if (value === null || value === undefined || value === "") params.delete(param);
      else params.set(param, String(value));
    }
    return "?" + params.toString();
  };

  /** A long query shortened for display. */
  const shortened = (query, n = 60) => (query.length > n + 1 ? query.slice(0, n) + "…" : query);

  /** The help box's rows for a tab: its own keys, then the page's. */
  const helpRows = (keys) => keys.map((k) => [k.keys.map(keyName).join(" "), k.says]).concat(GLOBAL_KEYS);

  // -- the page ----------------------------------------------------------------------------------------------------

  const start = (config) => {
    const {figures, keys, links, labels, clicks = {}, slide: slideSize} = config;
    const presenter = () => document.body.classList.contains("presenter");
    const activeTab = () => {
      const tab = document.querySelector("[role=tab][aria-selected=true]");
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
      const el = document.getElementById(figures[activeTab()] || "");
      if (!el || el.getBoundingClientRect().height < 20) return;
      const y = el.getBoundingClientRect().top + window.scrollY - stickyHeight() - 6;
      window.scrollTo({top: Math.max(0, y), behavior: "instant"});
    };
    const soon = () => [150, 600, 1500].forEach((t) => setTimeout(focusFigure, t));
    const watch = new ResizeObserver(() => { if (presenter()) setTimeout(focusFigure, 50); });
    const observeFigures = () => Object.values(figures).forEach((id) => {
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
    // The presenter checkbox's change: the page's class, the examples folded, the figure brought into view.
    const setPresenter = (large) => {
      document.body.classList.toggle("presenter", !!large);
      const examples = document.querySelector("#examples > .label-wrap");
      if (examples && large && examples.classList.contains("open")) examples.click();
      soon();
      return large;
    };
    const fire = (input, types = ["input", "change"]) =>
      types.forEach((t) => input.dispatchEvent(new Event(t, {bubbles: true})));
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
      const value = stepValue(Number(range.value), Number(range.min), Number(range.max), key.step);
      if (value === Number(range.value)) return true;
      range.value = String(value);
      fire(range);
      return true;
    };
    const switchTab = (delta) => {
      const tabs = [...document.querySelectorAll("[role=tab]")];
      const i = tabs.findIndex((t) => t.getAttribute("aria-selected") === "true");
      const next = tabs[(i + delta + tabs.length) % tabs.length];
      if (next) { next.click(); soon(); }
    };
    const slide = (format) => {
      const tab = activeTab();
      const el = document.getElementById(figures[tab] || "");
      const plot = el && el.querySelector(".js-plotly-plot");
      const name = "playground-" + tab;
      if (plot && window.Plotly) {
        window.Plotly.downloadImage(plot, {format: format, width: slideSize[0], height: slideSize[1], filename: name});
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
    const help = () => {
      let box = document.getElementById("key-help");
      if (box) { box.remove(); return; }
      box = document.createElement("div");
      box.id = "key-help";
      const tab = activeTab();
      box.innerHTML = "<strong>Keys" + (labels[tab] ? " on " + labels[tab] : "") + "</strong><table>" +
        helpRows(keys[tab] || []).map(([k, s]) => "<tr><td>" + k.split(" ").map((x) => "<kbd>" + x + "</kbd>")
          .join(" ") + "</td><td>" + s + "</td></tr>").join("") + "</table>";
      document.body.appendChild(box);
    };
    // Prepared links: each tab's link parameters, applied once after the linked tab has drawn; "link to this view"
    // carries their current values.
    const valueOf = (link) => {
      if (link.source) {  // a list shown on the page: the data-id of each element the selector finds
        const ids = [...document.querySelectorAll(link.source)].map((t) => t.dataset.id);
        return ids.length ? ids.join(",") : null;
      }
      const el = document.getElementById(link.target);
      if (!el) return null;
      if (link.kind === "slider") { const r = el.querySelector("input[type=range]"); return r ? r.value : null; }
      if (link.kind === "number") { const n = el.querySelector("input"); return n ? n.value : null; }
      if (link.kind === "radio") { const c = el.querySelector("input:checked"); return c ? c.value : null; }
      return null;
    };
    const setValue = (link, value) => {
      const el = document.getElementById(link.target);
      if (!el) return;
      if (link.kind === "slider") {
        const r = el.querySelector("input[type=range]");
        if (!r) return;
        r.value = String(stepValue(Number(value), Number(r.min), Number(r.max), 0));
        fire(r);
      } else if (link.kind === "radio") {
        const option = [...el.querySelectorAll("input[type=radio]")].find((o) => o.value === value);
        if (option) option.click();
      } else {
        const input = el.querySelector("textarea, input");
        if (!input) return;
        input.value = value;
        fire(input);
        if (link.kind === "number") input.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
      }
    };
    const shows = (link, value) => {  // whether a slider shows the linked value, kept in its range (others: yes)
      if (link.kind !== "slider") return true;
      const now = valueOf(link);
      const r = document.getElementById(link.target)?.querySelector("input[type=range]");
      return !r || Number(now) === stepValue(Number(value), Number(r.min), Number(r.max), 0);
    };
    const applyLink = async () => {
      const params = new URLSearchParams(location.search);
      if (!Object.values(links).flat().some((l) => params.has(l.param))) return;
      const wait = (ms) => new Promise((r) => setTimeout(r, ms));
      for (let i = 0; i < 360; i++) {  // until the page shows the linked tab and it has drawn its main figure
        const tab = activeTab();
        const fig = tab && document.getElementById(figures[tab] || "");
        if (tab === (params.get("tab") || tab) && fig && fig.getBoundingClientRect().height > 20 &&
            fig.querySelector(".js-plotly-plot, img, .tok, p")) break;
        await wait(250);
      }
      await wait(800);
      const ordered = linksToApply(links[activeTab()] || [], params);
      for (const link of ordered) {
        setValue(link, params.get(link.param));
        await wait(link.last ? 0 : 400);
      }
      // A link applied last depends on the others, and their answers may come back after its own (a busy server):
      // one of them can reset it (the flash step to 1). Until the page has stayed as linked for a few seconds, or
      // the visitor touches it, such a link is set again whenever it no longer shows its linked value.
      let touched = false;
      const touch = () => { touched = true; };
      document.addEventListener("pointerdown", touch, {once: true, capture: true});
      document.addEventListener("keydown", touch, {once: true, capture: true});
      for (let i = 0, calm = 0; i < 40 && calm < 6 && !touched; i++) {
        await wait(500);
        const off = ordered.filter((l) => l.last && !shows(l, params.get(l.param)));
        for (const link of off) setValue(link, params.get(link.param));
        calm = off.length ? 0 : calm + 1;
      }
    };
    // Gradio may add this script after the page has loaded: run now in that case.
    if (document.readyState === "complete") setTimeout(applyLink, 500);
    else window.addEventListener("load", () => setTimeout(applyLink, 500));
    const shareLink = () => {
      const box = document.getElementById("share-link");
      const a = box && box.querySelector("a");
      if (!a) return;
      const values = Object.fromEntries((links[activeTab()] || []).map((l) => [l.param, valueOf(l)]));
      const query = shareQuery(a.getAttribute("href"), values);
      if (a.getAttribute("href") !== query) {
        a.setAttribute("href", query);
        (a.querySelector("code") || a).textContent = shortened(query);
      }
    };
    setInterval(shareLink, 700);
    // Clicks on a figure that answers them (a tab's CLICKS): the point under the pointer (Plotly's own hover data,
    // which survives the figure being redrawn) goes into the tab's hidden textbox as its customdata, with a count
    // so the same point clicked twice is a change too, and the server hears of it.
    let clicked = 0;
    document.addEventListener("click", (e) => {
      for (const [figure, target] of Object.entries(clicks)) {
        const holder = e.target.closest && e.target.closest("#" + figure);
        const plot = holder && holder.querySelector(".js-plotly-plot");
        const point = plot && plot._hoverdata && plot._hoverdata[0];
        const box = document.querySelector("#" + target + " textarea, #" + target + " input");
        if (!point || point.customdata === undefined || !box) continue;
        box.value = String(point.customdata) + "#" + (++clicked);
        fire(box);
      }
    }, true);
    // Another tab opened at given link values (e.g. {layer: 3, head: 5}), on another prompt if given (analysed
    // first): its tab clicked, its controls set once it has drawn.
    const openTab = async (tab, values, prompt, analyze = false) => {
      const button = document.querySelector("[role=tab][data-tab-id=" + tab + "]");
      if (!button) return;
      const wait = (ms) => new Promise((r) => setTimeout(r, ms));
      const box = document.querySelector("#prompt textarea");
      button.click();
      if (prompt && box && (analyze || box.value !== prompt)) {
        const status = document.getElementById("status");
        const before = status ? status.innerText : "";
        box.value = prompt;
        fire(box);
        await wait(300);
        const analyze = document.querySelector("#analyze");
        if (analyze) analyze.click();
        for (let i = 0; i < 600 && status && (status.innerText === before || !status.innerText.includes("Analyzed"));
             i++) await wait(100);
        await wait(1000);
      }
      for (let i = 0; i < 600; i++) {  // until the tab shows and has drawn its main figure (it may compute first)
        const fig = document.getElementById(figures[tab] || "");
        if (activeTab() === tab && fig && fig.getBoundingClientRect().height > 20 &&
            fig.querySelector(".js-plotly-plot, img, .tok, p")) break;
        await wait(100);
      }
      await wait(800);
      for (const link of linksToApply(links[tab] || [], new URLSearchParams(values))) {
        setValue(link, String(values[link.param]));
        await wait(400);
      }
    };
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
      const t = e.target;
      if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
      const own = (keys[activeTab()] || []).find((k) => k.keys.includes(e.key));
      let done = false;
      if (own) done = step(own);
      else if (e.key === "?") { help(); done = true; }
      else if (e.key === "Escape") { const b = document.getElementById("key-help"); if (b) b.remove(); done = !!b; }
      else if (e.key === "[" || e.key === "]") { switchTab(e.key === "]" ? 1 : -1); done = true; }
      else if (e.key === "p") { const box = document.querySelector("#large input"); if (box) box.click(); done = !!box; }
      else if (e.key === "s" || e.key === "v") { slide(e.key === "s" ? "png" : "svg"); done = true; }
      if (done) e.preventDefault();
    });
    // What the page shows now, for a room (room.js): the tab, and each of its link parameters' values.
    const showing = () => {
      const tab = activeTab();
      const values = {};
      for (const l of links[tab] || []) { const v = valueOf(l); if (v !== null && v !== "") values[l.param] = v; }
      return {tab, label: labels[tab] || tab, figure: figures[tab] || "", values};
    };
    window.playgroundShowing = showing;
    window.playgroundPresenter = setPresenter;
    window.playgroundSlide = slide;
    window.playgroundOpen = openTab;
  };

  return {stepValue, keyName, linksToApply, shareQuery, shortened, helpRows, start};
})();

if (typeof module !== "undefined" && module.exports) module.exports = PlaygroundPresenter;
else PlaygroundPresenter.start(window.PLAYGROUND_CONFIG);
