// The presenter script's pure helpers, run by Node's own test runner (tests/playground/test_presenter.py starts it).
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const P = require(path.join(__dirname, "..", "..", "playground", "presenter.js"));

test("a step keeps a slider within its range", () => {
  assert.equal(P.stepValue(3, 0, 29, 1), 4);
  assert.equal(P.stepValue(29, 0, 29, 1), 29);
  assert.equal(P.stepValue(0, 0, 29, -1), 0);
  assert.equal(P.stepValue(500, -1, 512, 0), 500);
  assert.equal(P.stepValue(900, -1, 512, 0), 512);  // a link's value beyond the slider is clamped
});

test("keys are named as the help box shows them", () => {
  assert.equal(P.keyName("ArrowLeft"), "←");
  assert.equal(P.keyName("PageDown"), "PgDn");
  assert.equal(P.keyName("s"), "s");
  const rows = P.helpRows([{keys: ["ArrowRight", "PageDown"], says: "next head"}]);
  assert.deepEqual(rows[0], ["→ PgDn", "next head"]);
  assert.ok(rows.some(([k]) => k === "?"));  // the page's own keys follow the tab's
});

test("links apply in order, those marked last after the others, only those the query has", () => {
  const links = [{param: "gen", last: true}, {param: "temperature"}, {param: "top_p"}, {param: "seed"}];
  const params = new URLSearchParams("tab=sampler&gen=12,873&top_p=0.9&temperature=0.7");
  assert.deepEqual(P.linksToApply(links, params).map((l) => l.param), ["temperature", "top_p", "gen"]);
  assert.deepEqual(P.linksToApply(links, new URLSearchParams("tab=lens")), []);
});

test("link to this view: the server's query with the tab's current values set or removed", () => {
  const query = P.shareQuery("?prompt=Hi+there&tab=attention&layer=1", {layer: "3", head: "5", pos: null});
  const params = new URLSearchParams(query.slice(1));
  assert.equal(params.get("prompt"), "Hi there");
  assert.equal(params.get("tab"), "attention");
  assert.equal(params.get("layer"), "3");
  assert.equal(params.get("head"), "5");
  assert.ok(!params.has("pos"));
  assert.equal(P.shareQuery("?tab=sampler&gen=1,2", {gen: ""}), "?tab=sampler");  // nothing generated: no gen
  assert.equal(P.shareQuery("/?tab=lens#x", {}), "?tab=lens");
});

test("a long query is shortened for display only", () => {
  assert.equal(P.shortened("?a=1"), "?a=1");
  const long = "?" + "x".repeat(80);
  assert.equal(P.shortened(long), long.slice(0, 60) + "…");
  assert.equal(P.shortened(long.slice(0, 61)), long.slice(0, 61));
});
