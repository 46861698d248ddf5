// The room script's pure helpers, run by Node's own test runner (tests/playground/test_presenter.py starts it).
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const R = require(path.join(__dirname, "..", "..", "playground", "room.js"));

test("a page finds its room code in the query and the speaker's key only in the fragment", () => {
  assert.deepEqual(R.roomParams("?room=ab3cd&tab=lens", "#key=s3cret"), {code: "AB3CD", key: "s3cret"});
  assert.deepEqual(R.roomParams("?room=AB3CD&key=leaked", ""), {code: "AB3CD", key: ""});  // never from the query
  assert.deepEqual(R.roomParams("", ""), {code: "", key: ""});
  assert.deepEqual(R.roomParams("?room=%20xy7%20", "key=k"), {code: "XY7", key: "k"});
});

test("a view's controls read as one line; guesses are counted in words", () => {
  assert.equal(R.valuesLine({layer: 3, head: 5}), "layer 3 · head 5");
  assert.equal(R.valuesLine(null), "");
  assert.equal(R.guesses(1), "1 guess");
  assert.equal(R.guesses(0), "0 guesses");
  assert.equal(R.guesses(12), "12 guesses");
});

test("a figure is sent without Plotly's private keys", () => {
  const fig = {data: [{type: "bar", y: [1, 2], _private: {big: true}}], layout: {_fullLayout: 1, title: "t"}};
  assert.deepEqual(JSON.parse(R.plainJSON(fig)), {data: [{type: "bar", y: [1, 2]}], layout: {title: "t"}});
});

test("the reveal in words says what the results hold, and nothing when nobody guessed", () => {
  const r = {top: [{token_text: " Paris", p: 0.8123}], guesses: 4, guessed_top1: 3,
             favourite: {text: "Paris", count: 3, p: 0.8123}, overlap: 0.6789, overlap_means: "1 - TV",
             actual: " Paris"};
  const lines = R.resultsLines(r);
  assert.equal(lines[0], "The model's top guess: ' Paris', p = 0.812.");
  assert.equal(lines[1], "3 of 4 guessed it.");
  assert.match(lines[2], /favourite, Paris \(3\), has model probability 0\.812/);
  assert.match(lines[3], /0\.68 \(1 - TV\)/);
  assert.equal(lines[4], "The text itself goes on with ' Paris'.");
  const none = R.resultsLines({top: [{token_text: " Paris", p: 0.5}], guesses: 0, actual: null});
  assert.deepEqual(none, ["The model's top guess: ' Paris', p = 0.500.", "Nobody guessed."]);
  assert.deepEqual(R.resultsLines(null), []);
});

test("a title too long for a phone is shrunk to fit, never below 11 px; one that fits is left alone", () => {
  const long = {title: {text: "Nearest tokens to ·is by cosine similarity", font: {size: 28}}, font: {size: 20}};
  const fitted = R.fitTitle(long, 358);
  assert.ok(fitted.title.font.size < 28 && fitted.title.font.size >= 11);
  assert.ok(0.58 * fitted.title.font.size * long.title.text.length <= 358 - 24);
  assert.equal(long.title.font.size, 28);  // the speaker's layout is not changed
  assert.equal(R.fitTitle(long, 1240), long);
  assert.equal(R.fitTitle({title: "x".repeat(400)}, 358).title.font.size, 11);
  assert.equal(R.fitTitle({title: "<b>short</b>"}, 358).title, "<b>short</b>");
  assert.equal(R.fitTitle({}, 358).title, undefined);
});
