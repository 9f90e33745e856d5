// pgolf-rt browser demo, the coloured view of a score: each token's surprisal (bits) on a
// colour-blind-safe sequential scale (viridis, reversed: pale yellow = predictable, dark purple =
// surprising) over a fixed 0-12 bit range, a legend with numeric ticks, and the text's own
// whitespace and newlines (the tokenizer's normalizer folds them, so each token's span takes its
// characters from the original text).

export const MAX_BITS = 12;

// Viridis at 0, 1/8, ..., 1 (matplotlib's values).
const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [110, 206, 88], [253, 231, 37],
];

// Position on the scale: 0 for 0 bits, 1 for MAX_BITS and more.
const scaled = (bits) => Math.min(Math.max(bits / MAX_BITS, 0), 1);

function viridis(t) {
  const x = t * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return a.map((v, k) => Math.round(v + (b[k] - v) * f));
}

// Background and readable text colour for a token of `bits` bits.
export function colours(bits) {
  const t = scaled(bits);
  const [r, g, b] = viridis(1 - t);
  return { background: `rgb(${r}, ${g}, ${b})`, color: t > 0.45 ? "#fff" : "#111" };
}

// The legend: a gradient bar over 0..MAX_BITS with a tick every 2 bits.
export function drawLegend(el) {
  const stops = [];
  for (let b = 0; b <= MAX_BITS; b += 1) stops.push(`${colours(b).background} ${((100 * b) / MAX_BITS).toFixed(1)}%`);
  const bar = document.createElement("div");
  bar.className = "legend-bar";
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  const ticks = document.createElement("div");
  ticks.className = "legend-ticks";
  for (let b = 0; b <= MAX_BITS; b += 2) {
    const tick = document.createElement("span");
    tick.style.left = `${(100 * b) / MAX_BITS}%`;
    tick.textContent = b === MAX_BITS ? `${b}+` : String(b);
    ticks.append(tick);
  }
  const label = document.createElement("span");
  label.className = "legend-label";
  label.textContent = "bits per token";
  const scale = document.createElement("div");
  scale.className = "legend-scale";
  scale.append(bar, ticks);
  el.replaceChildren(label, scale);
}

const isSpace = (ch) => /\s/u.test(ch);

// Splits `text` into one string per piece (pieces are what the model saw, after
// normalization): a piece's whitespace takes the original's whole run of whitespace (newlines,
// tabs, repeated spaces) and whitespace the normalizer dropped goes to the next piece, so the
// spans concatenate to `text` exactly.
export function alignPieces(text, pieces) {
  const chars = Array.from(text);
  let pos = 0;
  const takeSpaces = () => {
    const from = pos;
    while (pos < chars.length && isSpace(chars[pos])) pos++;
    return chars.slice(from, pos).join("");
  };
  const spans = pieces.map((piece) => {
    let out = "";
    for (const ch of piece) {
      if (pos >= chars.length) break;
      if (isSpace(ch)) {
        out += takeSpaces();
      } else {
        if (isSpace(chars[pos])) out += takeSpaces(); // dropped by the normalizer
        if (pos < chars.length) out += chars[pos++]; // the character (or its unnormalized form)
      }
    }
    return out;
  });
  if (spans.length > 0) spans[spans.length - 1] += chars.slice(pos).join("");
  return spans;
}

// One <span> per token of `score` (the worker's score result), coloured by its bits; the token's
// index is in data-i.
export function renderTokens(el, text, score) {
  const spans = alignPieces(
    text,
    score.tokens.map((t) => t.piece),
  );
  const frag = document.createDocumentFragment();
  score.tokens.forEach((t, i) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = spans[i];
    const c = colours(t.bits);
    span.style.background = c.background;
    span.style.color = c.color;
    span.dataset.i = String(i);
    frag.append(span);
  });
  el.replaceChildren(frag);
}

// The hover card's text for token `t` (alternatives: [{piece, prob}], null while unknown, or
// "unavailable" when the worker that scored it was replaced).
export function describe(t, alternatives) {
  const lines = [
    `${JSON.stringify(t.piece)}  (id ${t.id})`,
    `${t.bits.toFixed(2)} bits · p = ${Math.exp(t.logprob).toPrecision(3)} · ${t.bytes} byte(s)`,
  ];
  if (alternatives === null) lines.push("top guesses: …");
  else if (alternatives === "unavailable") lines.push("top guesses: score the text again to see them");
  else if (alternatives.length > 0) {
    lines.push("top guesses:");
    for (const a of alternatives) lines.push(`  ${JSON.stringify(a.piece)}  ${(100 * a.prob).toFixed(1)}%`);
  }
  return lines.join("\n");
}
