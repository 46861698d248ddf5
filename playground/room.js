// A room (see room.py and room_http.py), all in the page: the speaker's page sends what it shows whenever that
// changes; a follower's page waits for each new version (one long poll) and draws the speaker's own figures, so it
// runs nothing on the server; the room guesses the next token. Only the speaker's page holds the room's key (in
// this browser's storage, never in the follower's link). The pure helpers at the top are tested with Node
// (tests/playground/room.test.js); `start` wires the page.
const PlaygroundRoom = (() => {
  const SEND_EVERY_MS = 250;  // the speaker's page looks for a change this often
  const MAX_GUESS = 32;       // room.MAX_GUESS_CHARS

  // -- pure helpers ------------------------------------------------------------------------------------------------

  /** The room code and the speaker's key a page was opened with: `?room=CODE`, and `#key=KEY` in a speaker link. */
  const roomParams = (search, hash) => {
    const code = (new URLSearchParams(search || "").get("room") || "").trim().toUpperCase();
    const key = new URLSearchParams((hash || "").replace(/^#/, "")).get("key") || "";
    return {code, key};
  };

  /** A view's controls as one line: "layer 3 · head 5". */
  const valuesLine = (values) => Object.entries(values || {}).map(([k, v]) => k + " " + v).join(" · ");

  /** "1 guess", "3 guesses". */
  const guesses = (n) => n + (n === 1 ? " guess" : " guesses");

  /** JSON without Plotly's private keys (those starting with "_"). */
  const plainJSON = (value) => JSON.stringify(value, (k, v) => (k.startsWith("_") ? undefined : v));

  /** The reveal, in words (text only: the page puts it in with textContent). */
  const resultsLines = (r) => {
    if (!r) return [];
    const top = r.top && r.top[0];
    const lines = [];
    if (top) lines.push("The model's top guess: '" + top.token_text + "', p = " + top.p.toFixed(3) + ".");
    if (r.guesses) {
      lines.push(r.guessed_top1 + " of " + r.guesses + " guessed it.");
      if (r.favourite) lines.push("The room's favourite, " + r.favourite.text + " (" + r.favourite.count +
                                  "), has model probability " + r.favourite.p.toFixed(3) + ".");
      lines.push("Overlap of the room's guesses with the model: " + r.overlap.toFixed(2) + " (" + r.overlap_means + ").");
    } else lines.push("Nobody guessed.");
    if (r.actual) lines.push("The text itself goes on with '" + r.actual + "'.");
    return lines;
  };

  /** The layout with its title's font shrunk (to 11 px at least) so the title fits `width` pixels: the speaker's
   *  figure, drawn for a projector, would be cut at a phone's width. A title that fits is left as it is. */
  const fitTitle = (layout, width) => {
    const title = layout && layout.title;
    const text = (typeof title === "string" ? title : (title && title.text) || "").replace(/<[^>]*>/g, "");
    if (!text || !width) return layout;
    const size = (title && title.font && title.font.size) || Math.round(1.4 * ((layout.font && layout.font.size) || 12));
    const fits = Math.floor((width - 24) / (0.58 * text.length));  // about 0.58 em a character, 12 px of margin a side
    if (fits >= size) return layout;
    const t = typeof title === "string" ? {text: title} : Object.assign({}, title);
    t.font = Object.assign({}, t.font || {}, {size: Math.max(11, fits)});
    return Object.assign({}, layout, {title: t});
  };

  // -- the page ----------------------------------------------------------------------------------------------------

  const start = () => {
    const base = new URL("room/", location.href.split("?")[0].split("#")[0]);
    const wait = (ms) => new Promise((r) => setTimeout(r, ms));
    const api = async (path, body, key, opts = {}) => {
      const init = {method: body === undefined ? "GET" : "POST", headers: {}, signal: opts.signal};
      if (body !== undefined) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
      if (key) init.headers["x-room-key"] = key;
      const r = await fetch(new URL(path, base), init);
      const data = await r.json().catch(() => ({error: "The server answered " + r.status + "."}));
      if (!r.ok) { const e = new Error(data.error || ("HTTP " + r.status)); e.status = r.status; throw e; }
      return data;
    };
    const el = (tag, attrs = {}, text) => {
      const e = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      return e;
    };
    let plotly = null;
    const loadPlotly = () => {
      if (window.Plotly) return Promise.resolve(window.Plotly);
      if (!plotly) plotly = new Promise((resolve, reject) => {
        const s = el("script", {src: new URL("plotly.js", base).href});
        s.onload = () => resolve(window.Plotly); s.onerror = reject;
        document.head.appendChild(s);
      });
      return plotly;
    };
    const draw = async (holder, plot) => {
      const P = await loadPlotly();
      const layout = fitTitle(Object.assign({}, plot.layout || {}, {width: undefined, autosize: true}),
                              holder.getBoundingClientRect().width);
      P.react(holder, plot.data || [], layout, {displayModeBar: false, responsive: true});
    };
    const banner = (text) => {
      let b = document.getElementById("room-banner");
      if (!b) { b = el("div", {id: "room-banner", role: "status"}); document.body.prepend(b); }
      b.textContent = text;
      const close = el("button", {type: "button"}, "×");
      close.onclick = () => b.remove();
      b.appendChild(close);
    };
    const keyName = (code) => "playground-room-key:" + code;

    // ---- the speaker ----
    const speak = (code, key, qr, link, note) => {
      document.body.classList.add("room-speaker");
      const search = new URLSearchParams(location.search);
      search.set("room", code);
      history.replaceState(null, "", "?" + search.toString());
      const bar = el("div", {id: "room-bar"});
      const label = el("strong", {}, "Room " + code);
      const count = el("span", {id: "room-count"}, "");
      const qrButton = el("button", {type: "button", id: "room-qr-button"}, "QR");
      const ask = el("button", {type: "button", id: "room-ask"}, "Ask: what comes next?");
      const end = el("button", {type: "button", id: "room-end"}, "End room");
      const copy = el("button", {type: "button", id: "room-copy", title: "to take the room back from another page"},
                      "Copy speaker link");
      copy.onclick = async () => {
        const url = location.href.split("#")[0] + "#key=" + key;
        try { await navigator.clipboard.writeText(url); copy.textContent = "Copied"; }
        catch (e) { prompt("Your speaker's link (it lets whoever holds it run the room):", url); }
      };
      bar.append(label, count, qrButton, ask, copy, end);
      document.body.appendChild(bar);
      // The QR code, large, for the projector (the server's SVG); a click or Esc hides it.
      const overlay = el("div", {id: "room-qr", class: "room-overlay"});
      const showQR = async () => {
        if (!qr) qr = await (await fetch(new URL(code + "/qr.svg", base))).text();
        overlay.innerHTML = "";
        const box = el("div", {class: "room-qr-box"});
        box.innerHTML = qr;  // the server's own SVG of the follow link
        overlay.append(el("div", {class: "room-code"}, "Room " + code), box,
                       el("div", {class: "room-link"}, link || ""), el("div", {class: "room-note"}, note || ""),
                       el("div", {class: "room-hint"}, "Open the link or scan the code to follow. Click to hide."));
        overlay.style.display = "flex";
      };
      overlay.onclick = () => { overlay.style.display = "none"; };
      document.body.appendChild(overlay);
      qrButton.onclick = showQR;
      if (qr || link) showQR();
      document.addEventListener("keydown", (e) => { if (e.key === "Escape") overlay.style.display = "none"; });
      // Followers, counted every few seconds.
      const countLoop = async () => {
        while (document.body.classList.contains("room-speaker")) {
          try { count.textContent = (await api(code + "/followers")).followers + " following"; } catch (e) { }
          await wait(3000);
        }
      };
      countLoop();
      // What this page shows, sent whenever it changes.
      const ids = new WeakMap();
      let serial = 0;
      const idOf = (obj) => { if (!obj) return 0; if (!ids.has(obj)) ids.set(obj, ++serial); return ids.get(obj); };
      const view = () => {
        const s = window.playgroundShowing ? window.playgroundShowing() : {tab: "", values: {}, figure: ""};
        const box = document.querySelector("#prompt textarea");
        const chat = document.querySelector("#chat input");
        const progress = document.getElementById("tour-progress");
        const fig = document.getElementById(s.figure);
        const plots = fig ? [...fig.querySelectorAll(".js-plotly-plot")] : [];
        let html = "";
        if (fig) {
          const clone = fig.cloneNode(true);
          clone.querySelectorAll("[data-testid=block-label]").forEach((l) => l.remove());  // Gradio's "Plot" tag
          [...clone.querySelectorAll(".js-plotly-plot")].forEach((p, i) => {
            const holder = document.createElement("div"); holder.setAttribute("data-plot", String(i)); p.replaceWith(holder);
          });
          html = clone.innerHTML;
        }
        return {tab: s.tab, label: s.label, prompt: box ? box.value : "", chat: !!(chat && chat.checked), values: s.values,
                slide: s.tab === "tour" && progress ? progress.innerText.trim() : "", html, plots};
      };
      let last = "", sending = false;
      const sendLoop = async () => {
        while (document.body.classList.contains("room-speaker")) {
          await wait(SEND_EVERY_MS);
          if (sending) continue;
          const v = view();
          const signature = plainJSON([v.tab, v.prompt, v.chat, v.values, v.slide, v.html,
                                       v.plots.map((p) => [idOf(p.data), idOf(p.layout)])]);
          if (signature === last) continue;
          sending = true;
          try {
            const parts = [{html: v.html}].concat(v.plots.map((p) => ({plot: JSON.parse(plainJSON({data: p.data,
                                                                                                  layout: p.layout}))})));
            await api(code + "/view", {view: {tab: v.tab, label: v.label, prompt: v.prompt, chat: v.chat,
                                              values: v.values, slide: v.slide, parts}}, key);
            last = signature;
          } catch (e) {
            if (e.status === 404 || e.status === 403) { banner(e.message); stopSpeaking(); }
            else if (e.status === 413) { banner(e.message); last = signature; }
            else await wait(1000);
          } finally { sending = false; }
        }
      };
      sendLoop();
      // The question: the guesses arriving as bars beside the model's probabilities; close; reveal.
      const panel = el("div", {id: "room-question", class: "room-overlay"});
      document.body.appendChild(panel);
      let asking = 0;
      const openQuestion = async () => {
        const v = view();
        const position = v.values.pos !== undefined && ["lens", "rope", "block", "routes"].includes(v.tab)
          ? Number(v.values.pos) : -1;
        panel.innerHTML = "";
        panel.style.display = "flex";
        const box = el("div", {class: "room-question-box"});
        const plot = el("div", {id: "room-guesses"});
        const says = el("div", {id: "room-results"});
        const close = el("button", {type: "button", id: "room-close"}, "Close guesses");
        const reveal = el("button", {type: "button", id: "room-reveal"}, "Reveal the model's answer");
        const back = el("button", {type: "button", id: "room-back"}, "Back to the view");
        // every question so far, as Markdown for the deck's speaker notes (room.Room.notes)
        const notes = el("a", {id: "room-notes", href: new URL(code + "/notes.md", base).href,
                               download: "room-" + code + "-notes.md"}, "Notes ⤓");
        const buttons = el("div", {class: "room-buttons"});
        buttons.append(close, reveal, back, notes);
        box.append(buttons, plot, says);
        panel.appendChild(box);
        says.textContent = "Asking the model …";
        let question;
        try {
          question = await api(code + "/question", {prompt: v.prompt, chat: v.chat, position}, key);
        } catch (e) { says.textContent = e.message; return; }
        const mine = ++asking;
        says.textContent = "";
        close.onclick = () => api(code + "/close", {}, key).catch((e) => { says.textContent = e.message; });
        reveal.onclick = () => api(code + "/reveal", {}, key).catch((e) => { says.textContent = e.message; });
        back.onclick = () => { panel.style.display = "none"; asking++; };
        let since = -1;
        const large = document.body.classList.contains("presenter") ? 1 : 0;
        while (mine === asking && document.body.classList.contains("room-speaker")) {
          try {
            const t = await api(code + "/question?figure=1&large=" + large + "&since=" + since);
            since = t.serial;
            if (t.figure) await draw(plot, t.figure);
            const q = t.question;
            says.innerHTML = "";
            const lines = q && q.results ? resultsLines(q.results)
              : [guesses(q ? q.guesses : 0) + (q && q.state === "closed" ? ", closed" : " so far")];
            lines.forEach((line) => says.appendChild(el("p", {}, line)));
            if (q && q.state !== "open") close.disabled = true;
            if (q && q.state === "revealed") { reveal.disabled = true; since = -1; await wait(1000); }
            if (q && q.number !== question.number) break;
          } catch (e) { says.textContent = e.message; await wait(2000); }
        }
      };
      ask.onclick = openQuestion;
      const stopSpeaking = () => {
        document.body.classList.remove("room-speaker");
        localStorage.removeItem(keyName(code));
        [bar, overlay, panel].forEach((x) => x.remove());
        history.replaceState(null, "", location.pathname);
      };
      end.onclick = async () => {
        if (!confirm("End room " + code + "? Followers go back to the app on their own.")) return;
        try { await api(code + "/end", {}, key); } catch (e) { }
        stopSpeaking();
      };
    };

    // ---- a follower ----
    const follow = async (code) => {
      document.body.classList.add("room-following");
      const panel = el("div", {id: "room-follow"});
      const head = el("div", {class: "room-head"});
      const title = el("strong", {}, "Room " + code + " · following the speaker");
      const explore = el("button", {type: "button", id: "room-explore"}, "Explore on my own");
      head.append(title, explore);
      const where = el("div", {id: "room-where"});
      const prompt = el("div", {id: "room-prompt"});
      const question = el("div", {id: "room-ask-box"});
      const shown = el("div", {id: "room-view"});
      panel.append(head, where, prompt, question, shown);
      document.body.prepend(panel);
      const again = el("button", {type: "button", id: "room-follow-again"}, "Follow the speaker again");
      document.body.appendChild(again);
      let state = null, follower = sessionStorage.getItem("playground-follower:" + code);
      const join = async () => {
        follower = (await api(code + "/join", {})).follower;
        sessionStorage.setItem("playground-follower:" + code, follower);
      };
      const following = () => document.body.classList.contains("room-following");
      let drawnVersion = -1, drawnQuestion = "";
      const render = async () => {
        if (!state || !following() || state.version === drawnVersion) return;
        drawnVersion = state.version;
        const v = state.view;
        where.textContent = v ? [v.label, valuesLine(v.values), v.slide].filter((x) => x).join(" · ")
          : "Waiting for the speaker …";
        prompt.textContent = v && v.prompt ? v.prompt : "";
        renderQuestion();
        if (!v) { shown.innerHTML = ""; return; }
        const parts = v.parts || [];
        const html = parts.find((p) => p.html !== undefined);
        shown.innerHTML = html ? html.html : "";  // sanitized by the server (room.safe_html)
        const plots = parts.filter((p) => p.plot);
        const holders = [...shown.querySelectorAll("[data-plot]")];
        for (let i = 0; i < plots.length; i++) {
          let holder = holders[i];
          if (!holder) { holder = el("div"); shown.appendChild(holder); }
          holder.className = "room-plot";
          await draw(holder, plots[i].plot);
        }
      };
      let myGuess = "";
      const renderQuestion = () => {
        const q = state && state.question;
        const key = q ? q.number + ":" + q.state : "";
        if (key === drawnQuestion) return;
        drawnQuestion = key;
        question.innerHTML = "";
        if (!q) { question.style.display = "none"; return; }
        question.style.display = "block";
        question.appendChild(el("strong", {}, "Q" + q.number + ": what comes next after “…" + q.context.slice(-80) + "”?"));
        if (q.state === "open") {
          const form = el("form", {class: "room-guess"});
          const input = el("input", {type: "text", maxlength: String(MAX_GUESS), id: "room-guess-input",
                                     placeholder: "one word", autocomplete: "off", autocapitalize: "none"});
          const send = el("button", {type: "submit", id: "room-guess-send"}, "Guess");
          const says = el("div", {id: "room-guess-says"}, myGuess ? "Your guess: " + myGuess : "");
          form.append(input, send);
          form.onsubmit = async (e) => {
            e.preventDefault();
            try {
              if (!follower) await join();
              let r;
              try { r = await api(code + "/guess", {follower, text: input.value}); }
              catch (err) { if (err.status !== 403) throw err; await join(); r = await api(code + "/guess", {follower, text: input.value}); }
              myGuess = r.text;
              says.textContent = "Your guess: " + r.text + " (its first token: '" + r.token_text +
                "'). You can change it until the speaker closes the guesses.";
            } catch (err) { says.textContent = err.message; }
          };
          question.append(form, says);
        } else if (q.state === "closed") {
          question.appendChild(el("p", {}, "The guesses are closed" + (myGuess ? " (yours: " + myGuess + ")" : "") +
                                  ". Waiting for the reveal …"));
        } else {
          resultsLines(q.results).forEach((line) => question.appendChild(el("p", {}, line)));
          if (myGuess) question.appendChild(el("p", {}, "Your guess: " + myGuess + "."));
        }
      };
      explore.onclick = () => {
        document.body.classList.remove("room-following");
        const v = state && state.view;
        if (v && v.tab && window.playgroundOpen) window.playgroundOpen(v.tab, v.values || {}, v.prompt || undefined, true);
      };
      again.onclick = () => { document.body.classList.add("room-following"); drawnVersion = -1; drawnQuestion = ""; render(); window.scrollTo(0, 0); };
      try { await join(); } catch (e) { banner(e.message); }
      let since = -1;
      while (true) {
        try {
          const s = await api(code + "?since=" + since + "&follower=" + encodeURIComponent(follower || ""));
          if (s.closed) throw Object.assign(new Error("The room has closed: the app is yours."), {status: 404});
          state = s; since = s.version;
          await render();
        } catch (e) {
          if (e.status === 404) {
            banner(e.message);
            document.body.classList.remove("room-following");
            panel.remove(); again.remove();
            return;
          }
          await wait(2000);
        }
      }
    };

    // ---- a page opens ----
    const params = roomParams(location.search, location.hash);
    if (params.key && params.code) {
      localStorage.setItem(keyName(params.code), params.key);
      history.replaceState(null, "", location.pathname + location.search);
    }
    const opened = async () => {
      if (!params.code) return;
      try {
        await api(params.code + "?hold=0");
      } catch (e) {
        banner(e.message);
        return;
      }
      const key = localStorage.getItem(keyName(params.code));
      if (key) {
        speak(params.code, key, "", "", "");
        // The server skipped this page's analysis (it opened with ?room=): the speaker's page analyses its prompt.
        for (let i = 0; i < 100 && !document.querySelector("#analyze"); i++) await wait(100);
        await wait(500);
        const status = document.getElementById("status");
        if (!status || !status.innerText.includes("Analyzed")) { const a = document.querySelector("#analyze"); if (a) a.click(); }
      } else follow(params.code);
    };
    if (document.readyState === "complete") opened();
    else window.addEventListener("load", opened);
    return {
      start: async () => {
        try {
          const r = await api("new", {});
          localStorage.setItem(keyName(r.code), r.key);
          speak(r.code, r.key, r.qr_svg, r.follow_url, r.note);

        } catch (e) { banner(e.message); }
      },
    };
  };

  return {roomParams, valuesLine, plainJSON, resultsLines, guesses, fitTitle, start};
})();

if (typeof module !== "undefined" && module.exports) module.exports = PlaygroundRoom;
else window.playgroundRoom = PlaygroundRoom.start();
