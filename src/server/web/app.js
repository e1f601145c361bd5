// The chat page of `ffnskip serve`: streams replies from /v1/chat/completions with the
// `ffnskip.trace` extension and draws, per generated token, which layers computed their FFN.
"use strict";

const $ = (id) => document.getElementById(id);

const page = {
  model: "",
  nLayers: 0,
  messages: [],      // the conversation sent with every request
  controller: null,  // aborts the reply in flight
  shown: null,       // the trace on the map
  chat: 0,           // counts "New chat"s: a reply that outlives its chat is dropped
};

// The policy spec the settings describe, as `ffnskip generate --skip` takes it.
function policySpec() {
  const policy = $("policy").value;
  const ratio = String(Math.round(Number($("ratio").value) * 100) / 100);
  if (policy === "dense" || policy === "speculate:ngram") return policy;
  return `${policy}@${ratio}`;
}

function updateSpec() {
  const policy = $("policy").value;
  const fixed = policy === "dense" || policy === "speculate:ngram";
  $("ratio").disabled = fixed;
  $("compare").disabled = policy === "dense";
  $("ratio-out").textContent = fixed ? "–" : String(Math.round(Number($("ratio").value) * 100) / 100);
  $("spec").textContent = policySpec();
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function connect() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    const model = body.data[0];
    page.model = model.id;
    page.nLayers = model.meta.n_layers;
    $("model-name").textContent = `${model.id} · ${page.nLayers} layers · context ${model.meta.n_ctx}`;
    document.documentElement.style.setProperty("--layers", page.nLayers);
    drawLabels([]);
    showError("");
    document.body.dataset.state = "idle";
  } catch (e) {
    $("model-name").textContent = "not connected";
    showError(`Cannot reach the model: ${e.message}. Enter the API key if the server needs one; retrying…`);
    setTimeout(connect, 2000);
  }
}

// --- the conversation ---

// A message; an assistant's gets one text per policy in `policies`, side by side.
function addMessage(role, text, policies = []) {
  const hint = document.querySelector("#messages .hint");
  if (hint) hint.remove();
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Model";
  const row = document.createElement("div");
  row.className = policies.length > 1 ? "pair" : "single";
  const texts = (policies.length ? policies : [null]).map((policy) => {
    const box = document.createElement("div");
    if (policies.length > 1) {
      const label = document.createElement("div");
      label.className = "policy";
      label.textContent = policy;
      box.append(label);
    }
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    box.append(body);
    row.append(box);
    return body;
  });
  const meta = document.createElement("div");
  meta.className = "meta";
  el.append(who, row, meta);
  $("messages").append(el);
  scrollToEnd($("messages"));
  return { el, texts, meta };
}

function scrollToEnd(el) {
  el.scrollTop = el.scrollHeight;
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "streaming" : "idle";
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Server-sent events of a fetch response, one parsed `data:` payload at a time.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function requestBody(spec, messages) {
  const body = {
    model: page.model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    ffnskip: { policy: spec, trace: true },
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

function newTrace(policy) {
  return { policy, nLayers: page.nLayers, cold: [], tokens: [], times: [], usage: null };
}

// Streams one reply under `trace.policy` into `textEl` and `trace`; resolves to its text and
// finish reason ("stopped" when aborted).
async function streamReply(messages, textEl, trace, signal) {
  let content = "";
  let finish = null;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(requestBody(trace.policy, messages)),
      signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => null);
      throw new Error(err && err.error ? err.error.message : `${res.status} ${res.statusText}`);
    }
    for await (const event of sseEvents(res.body)) {
      if (event.error) throw new Error(event.error.message);
      const ext = event.ffnskip;
      if (ext && ext.n_layers) {
        trace.nLayers = ext.n_layers;
        trace.cold = ext.cold_layers;
        if (page.shown === trace) showTrace(trace);
      }
      if (ext && ext.token) {
        trace.tokens.push(ext.token);
        trace.times.push(performance.now());
        addColumn(trace, ext.token);
      }
      const choice = event.choices && event.choices[0];
      if (choice && choice.delta && choice.delta.content) {
        content += choice.delta.content;
        textEl.textContent = content;
        scrollToEnd($("messages"));
      }
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (event.usage) {
        trace.usage = event.usage;
        updateStats(trace);
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") throw e;
    finish = "stopped";
  }
  return { content, finish };
}

// Sends the conversation with `text` added; with "compare" on, the same conversation goes to
// dense at the same time, and both replies stand side by side (the conversation continues
// with the chosen policy's).
async function send(text) {
  showError("");
  page.messages.push({ role: "user", content: text });
  const messages = page.messages.slice();
  const chat = page.chat;
  addMessage("user", text);
  const spec = policySpec();
  const policies = $("compare").checked && spec !== "dense" ? [spec, "dense"] : [spec];
  const reply = addMessage("assistant", "", policies);
  const traces = policies.map(newTrace);
  showTrace(traces[0]);
  page.controller = new AbortController();
  setBusy(true);
  const results = await Promise.allSettled(
    traces.map((trace, i) => streamReply(messages, reply.texts[i], trace, page.controller.signal)),
  );
  page.controller = null;
  setBusy(false);
  if (page.chat !== chat) return;
  const failed = results.find((r) => r.status === "rejected");
  if (failed) showError(failed.reason.message);
  const main = results[0].status === "fulfilled" ? results[0].value.content : "";
  if (main) page.messages.push({ role: "assistant", content: main });
  else page.messages.pop();
  traces.forEach((trace, i) => {
    const finish = results[i].status === "fulfilled" ? results[i].value.finish : "failed";
    const line = document.createElement("span");
    line.textContent = `${trace.policy} · ${trace.tokens.length} tokens${finish ? ` · ${finish}` : ""} `;
    const again = document.createElement("button");
    again.type = "button";
    again.className = "show-map";
    again.textContent = policies.length > 1 ? `Show the ${trace.policy} skip map` : "Show its skip map";
    again.addEventListener("click", () => showTrace(trace));
    reply.meta.append(line, again, " ");
  });
  $("prompt").focus();
}

// --- the skip map: a column per generated token, a row per layer ---

function drawLabels(cold) {
  const labels = $("layer-labels");
  labels.replaceChildren();
  for (let l = 0; l < page.nLayers; l++) {
    const span = document.createElement("span");
    span.textContent = l % 5 === 0 || l === page.nLayers - 1 ? String(l) : "";
    if (cold.includes(l)) span.className = "cold";
    labels.append(span);
  }
}

function showTrace(trace) {
  page.shown = trace;
  drawLabels(trace.cold);
  $("map").replaceChildren();
  for (const token of trace.tokens) addColumn(trace, token);
  updateStats(trace);
  $("token-info").textContent = "Hover a column, or focus the map and use ← →, to see one token.";
}

function addColumn(trace, token) {
  if (page.shown !== trace) return;
  const map = $("map");
  const atEnd = map.scrollLeft + map.clientWidth >= map.scrollWidth - 4;
  const col = document.createElement("div");
  col.className = "col";
  if (token.warmup || token.source === "prefill") col.classList.add("warm");
  col.dataset.index = token.index;
  col.dataset.layers = token.layers;
  [...token.layers].forEach((letter, l) => {
    const cell = document.createElement("span");
    cell.className = trace.cold.includes(l) ? `cell ${letter} cold` : `cell ${letter}`;
    col.append(cell);
  });
  col.addEventListener("mouseenter", () => select(col));
  map.append(col);
  if (atEnd) map.scrollLeft = map.scrollWidth;
  updateStats(trace);
}

function updateStats(trace) {
  if (page.shown !== trace) return;
  const n = trace.tokens.length;
  $("stat-tokens").textContent = String(n);
  // The first token comes out of the prefill, where no policy skips: count the decode steps.
  const decoded = trace.tokens.filter((t) => t.source !== "prefill");
  const skipped = decoded.reduce((sum, t) => sum + [...t.layers].filter((c) => c !== "F").length, 0);
  $("stat-ratio").textContent = decoded.length ? `${((100 * skipped) / (decoded.length * trace.nLayers)).toFixed(1)} %` : "–";
  const usage = trace.usage && trace.usage.ffnskip;
  $("stat-server").textContent = usage
    ? `${(100 * usage.ffn_skip_ratio).toFixed(1)} % (${(100 * usage.ffn_skip_ratio_post_warmup).toFixed(1)} %)`
    : "–";
  const t = trace.times;
  $("stat-rate").textContent = n > 2 ? ((n - 1) / ((t[n - 1] - t[0]) / 1000)).toFixed(1) : "–";
  $("map").setAttribute("aria-label", `Skip map of ${n} tokens by ${trace.nLayers} layers, ${trace.policy}`);
}

function describe(token) {
  const skipped = [];
  [...token.layers].forEach((c, l) => { if (c !== "F") skipped.push(l); });
  const what = skipped.length ? `FFN not computed at layers ${ranges(skipped)} (${skipped.length} of ${token.layers.length})` : "every FFN computed";
  const when = token.source === "prefill" ? "from the prefill" : token.warmup ? "warm-up step" : `${token.source} step`;
  return `token ${token.index}: ${JSON.stringify(token.text)} · ${what} · ${when}`;
}

// "3–5, 9" for [3, 4, 5, 9].
function ranges(layers) {
  const out = [];
  for (let i = 0; i < layers.length; ) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j] + 1) j++;
    out.push(i === j ? `${layers[i]}` : `${layers[i]}–${layers[j]}`);
    i = j + 1;
  }
  return out.join(", ");
}

function select(col) {
  for (const c of $("map").querySelectorAll(".col.selected")) c.classList.remove("selected");
  if (!col) return;
  col.classList.add("selected");
  col.scrollIntoView({ block: "nearest", inline: "nearest" });
  const token = page.shown.tokens[Number(col.dataset.index)];
  $("token-info").textContent = describe(token);
}

function onMapKey(event) {
  const cols = [...$("map").children];
  if (!cols.length) return;
  const current = cols.findIndex((c) => c.classList.contains("selected"));
  const moves = { ArrowLeft: current - 1, ArrowRight: current + 1, Home: 0, End: cols.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = current < 0 ? cols.length - 1 : Math.max(0, Math.min(cols.length - 1, moves[event.key]));
  select(cols[next]);
}

function newChat() {
  if (page.controller) page.controller.abort();
  page.chat += 1;
  page.messages = [];
  $("messages").replaceChildren();
  showTrace({ policy: policySpec(), nLayers: page.nLayers, cold: [], tokens: [], times: [], usage: null });
  showError("");
  $("prompt").focus();
}

function init() {
  $("policy").addEventListener("change", updateSpec);
  $("ratio").addEventListener("input", updateSpec);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || page.controller || !page.nLayers) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => page.controller && page.controller.abort());
  $("new-chat").addEventListener("click", newChat);
  $("map").addEventListener("keydown", onMapKey);
  $("map").addEventListener("mouseleave", () => select(null));
  $("api-key").addEventListener("change", () => page.nLayers || connect());
  updateSpec();
  setBusy(false);
  document.body.dataset.state = "loading";
  connect();
}

init();
