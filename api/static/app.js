// mlxq web page: a streaming chat against /v1/chat/completions and a live view of /fleet
// (tables here, charts in charts.js).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "mlxq.apiKey";
const CONVERSATION_STORAGE = "mlxq.conversation";
const FLEET_EVERY_MS = 2000;
const USAGE_EVERY_MS = 10000;

// The conversation, sent with every request and kept across reloads: {role, content, usage?}.
let turns = loadTurns();
let temperatureChosen = false; // typed by the person: the model's suggestion no longer applies
let controller = null; // AbortController of the request in flight, if any
let modelsRetry = null; // timer that asks for the models again while none is served
let usageTimer = null; // timer of the next usage refresh

// --- API key and requests -------------------------------------------------------------------

function headers(extra = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// The error message of a failed response: OpenAI's {"error": {"message"}}, mlxq's
// {"detail"}, or the status line.
async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const message = body.error?.message ?? body.detail;
    if (message) return typeof message === "string" ? message : JSON.stringify(message);
  } catch {
    // not JSON: fall through
  }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

// --- Models ---------------------------------------------------------------------------------

async function loadModels() {
  clearTimeout(modelsRetry);
  const select = $("model");
  const previous = select.value;
  let models = [];
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    // Chat needs a model that generates: an embedding model (its `capabilities` say so) is
    // not offered. A model whose capabilities are not told is.
    models = (await response.json()).data.filter((model) =>
      (model.capabilities ?? ["completion"]).includes("completion"),
    );
  } catch (error) {
    select.replaceChildren(new Option(`(${error.message})`, ""));
    modelsRetry = setTimeout(loadModels, FLEET_EVERY_MS);
    return;
  }
  const ids = models.map((model) => model.id);
  if (ids.length === 0) {
    select.replaceChildren(new Option("(no worker is serving a chat model)", ""));
    modelsRetry = setTimeout(loadModels, FLEET_EVERY_MS); // a worker may start later
    return;
  }
  // Every model a worker may serve; one not loaded is loaded by its first request.
  select.replaceChildren(
    ...models.map((model) => new Option(model.state === "loaded" ? model.id : `${model.id} (not loaded)`, model.id)),
  );
  if (ids.includes(previous)) select.value = previous;
}

// --- Conversation kept in localStorage ------------------------------------------------------

function loadTurns() {
  try {
    const stored = JSON.parse(localStorage.getItem(CONVERSATION_STORAGE) ?? "[]");
    if (!Array.isArray(stored)) return [];
    return stored.filter((turn) => typeof turn?.role === "string" && typeof turn.content === "string");
  } catch {
    return []; // unreadable (edited by hand?): start afresh rather than fail
  }
}

function saveTurns() {
  if (turns.length) localStorage.setItem(CONVERSATION_STORAGE, JSON.stringify(turns));
  else localStorage.removeItem(CONVERSATION_STORAGE);
}

function showTurns() {
  for (const turn of turns) {
    if (turn.role === "user") {
      addBubble("user", turn.content);
    } else {
      const answer = addBubble("assistant", "");
      showAnswer(answer, turn.content);
      if (turn.usage) addNote(answer, usageNote(turn.usage));
    }
  }
}

// --- Chat -----------------------------------------------------------------------------------

function addBubble(role, text) {
  const bubble = document.createElement("div");
  bubble.className = `bubble ${role}`;
  bubble.textContent = text;
  $("conversation").append(bubble);
  bubble.scrollIntoView({ block: "end" });
  return bubble;
}

// An answer, as Markdown made safe (markdown.js); re-rendered as it streams.
function showAnswer(bubble, text) {
  renderMarkdown(bubble, text);
}

function usageNote(usage) {
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  return (
    `${usage.prompt_tokens} prompt tokens (${cached} from the prefix cache) · ` +
    `${usage.completion_tokens} answer tokens`
  );
}

function addNote(bubble, text) {
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = text;
  bubble.append(note);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Yields the data of each Server-Sent Event in a response body. Comments (": keep-alive")
// and other fields are skipped; several data lines of one event are joined with "\n".
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop(); // an incomplete last line waits for more
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield data.join("\n");
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      } // ":" comments and other fields are ignored
    }
  }
  if (data.length) yield data.join("\n");
}

// Sampling options set on the page; left empty, the server's defaults apply.
function sampling() {
  const temperature = $("temperature").value;
  return temperature === "" ? {} : { temperature: Number(temperature) };
}

async function send() {
  const prompt = $("prompt");
  const content = prompt.value.trim();
  const model = $("model").value;
  if (!content || controller) return;
  if (!model) {
    addBubble("assistant error", "No model to ask: no worker is serving one yet.");
    return;
  }
  prompt.value = "";
  const conversation = turns; // "New chat" while streaming starts a new list
  conversation.push({ role: "user", content });
  const messages = conversation.map(({ role, content }) => ({ role, content }));
  addBubble("user", content);
  const answer = addBubble("assistant streaming", "");
  let text = "";
  let usage = null;
  let failed = false;
  controller = new AbortController();
  setBusy(true);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        model,
        messages,
        stream: true,
        stream_options: { include_usage: true }, // a last chunk with token counts
        ...sampling(),
      }),
      signal: controller.signal,
    });
    if (response.status !== 200) throw new Error(await errorMessage(response));
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        text += piece;
        showAnswer(answer, text);
        answer.scrollIntoView({ block: "end" });
      }
    }
  } catch (error) {
    if (error.name === "AbortError") {
      addNote(answer, "(stopped)");
    } else {
      failed = true;
      answer.classList.add("error");
      showAnswer(answer, text);
      addNote(answer, `Error: ${error.message}`);
    }
  } finally {
    answer.classList.remove("streaming");
    controller = null;
    setBusy(false);
  }
  if (usage) addNote(answer, usageNote(usage));
  if (failed && !text) {
    conversation.pop(); // nothing answered: the question can be asked again without a gap
  } else {
    conversation.push({ role: "assistant", content: text, ...(usage && { usage }) });
  }
  if (conversation === turns) saveTurns();
  refreshUsage(); // this answer counts now
}

function stop() {
  if (controller) controller.abort(); // the server cancels the generation when we go away
}

function newChat() {
  stop();
  turns = [];
  saveTurns();
  $("conversation").replaceChildren();
  $("prompt").focus();
}

// --- Fleet ----------------------------------------------------------------------------------

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, className, title] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    if (title) td.title = title;
    tr.append(td);
  }
  return tr;
}

function emptyRow(text, columns) {
  const tr = row([[text, "muted"]]);
  tr.firstChild.colSpan = columns;
  return tr;
}

function megabytes(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${Math.round(bytes / 1e6)} MB`;
}

// The models a worker holds (and loads now), with what each takes in memory.
function heldText(w) {
  const held = (w.held ?? []).map((h) => `${h.model} (${megabytes(h.bytes)})`);
  const loading = (w.loading ?? []).map((model) => `${model} (loading)`);
  return [...held, ...loading].join(", ") || "none";
}

// A worker's host; a worker group's hosts, its ranks and how it split its model.
function hostText(w) {
  if (!w.group) return w.host ?? "?";
  return `${w.group.hosts.join(", ")} (${w.group.ranks} ranks, ${w.group.split})`;
}

// Speculative decoding's draft tokens: accepted of proposed, and the rate.
function draftsText(w) {
  const proposed = w.draft_tokens_proposed ?? 0;
  if (!proposed) return "-";
  const accepted = w.draft_tokens_accepted ?? 0;
  return `${accepted}/${proposed} (${Math.round((100 * accepted) / proposed)}%)`;
}

function showFleet(fleet) {
  const workers = fleet.workers.map((w) =>
    row([
      [hostText(w), null, w.name],
      [heldText(w)],
      [`${megabytes(w.memory_used ?? 0)} / ${megabytes(w.memory_budget ?? 0)}`, "num"],
      [`${w.running}/${w.slots}`, "num"],
      [w.tokens_per_s.toFixed(1), "num"],
      [draftsText(w), "num", "Speculative decoding: draft tokens the model accepted, of those proposed"],
    ]),
  );
  $("workers").tBodies[0].replaceChildren(...(workers.length ? workers : [emptyRow("no live workers", 6)]));
  const decisions = (fleet.placement ?? []).slice(0, 6).map((d) =>
    row([
      [new Date(d.at * 1000).toLocaleTimeString(), null, d.worker],
      [`${d.action} ${d.model}`],
      [d.reason],
    ]),
  );
  $("placement").tBodies[0].replaceChildren(...(decisions.length ? decisions : [emptyRow("no decisions yet", 3)]));
  // A model has several queues: its shared one, each worker's own (requests routed to the
  // worker holding their conversation) and each batch's lane; the lane tells them apart.
  const queues = fleet.queues.map((q) =>
    row([
      [q.model ?? q.queue, null, q.queue],
      [q.lane ?? "shared", null, q.queue],
      [String(q.queued), "num"],
      [String(q.failed), "num", "Failed jobs RQ keeps (refused requests apart)"],
      [String(q.refused ?? 0), "num", "Requests refused by a worker (invalid, too long...)"],
    ]),
  );
  $("queues").tBodies[0].replaceChildren(...(queues.length ? queues : [emptyRow("no queues", 5)]));
  suggestTemperature(fleet);
}

// Until a temperature is typed, the field shows the one the model's makers suggest
// (generation_config.json, reported by its workers), when they suggest one.
function suggestTemperature(fleet) {
  if (temperatureChosen) return;
  const model = $("model").value;
  const worker = fleet.workers.find((w) => w.model === model && w.suggested_temperature != null);
  if (worker) {
    const field = $("temperature");
    field.value = String(worker.suggested_temperature);
    field.title = "The model's suggested temperature (its generation_config.json); 0 is greedy";
  }
}

async function refreshFleet() {
  const status = $("fleet-status");
  try {
    const response = await fetch("/fleet", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    showFleet(await response.json());
    status.className = "muted";
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    status.className = "error-text";
    status.textContent = `Fleet: ${error.message}`;
  } finally {
    setTimeout(refreshFleet, FLEET_EVERY_MS);
  }
}

// --- Usage of the key the page holds (every key's for an admin key) ----------------------

function limitsText(limits) {
  if (!limits) return "no limits";
  const parts = [
    [limits.rpm, "requests/min"],
    [limits.tpm, "tokens/min"],
    [limits.max_concurrent, "at once"],
    [limits.files_bytes, "file bytes"],
  ].filter(([value]) => value != null);
  return parts.length ? parts.map(([value, what]) => `${value} ${what}`).join(" · ") : "no limits";
}

async function refreshUsage() {
  const line = $("usage-key");
  try {
    const response = await fetch("/usage", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const usage = await response.json();
    line.className = "muted";
    line.textContent = usage.admin
      ? `Key ${usage.key}: every key's usage is shown.`
      : `Key ${usage.key} (${limitsText(usage.limits)}): its own usage.`;
    const figures = ["requests", "prompt_tokens", "completion_tokens", "cached_tokens"];
    const rows = usage.totals.map((total) =>
      row([[total.key], ...figures.map((figure) => [String(total[figure]), "num"])]),
    );
    $("usage")
      .querySelector("tbody")
      .replaceChildren(...(rows.length ? rows : [emptyRow("nothing answered yet", 5)]));
  } catch (error) {
    line.className = "error-text";
    line.textContent = `Usage: ${error.message}`;
  } finally {
    clearTimeout(usageTimer);
    usageTimer = setTimeout(refreshUsage, USAGE_EVERY_MS);
  }
}

// --- Wiring ---------------------------------------------------------------------------------

function start() {
  const keyInput = $("api-key");
  keyInput.value = localStorage.getItem(KEY_STORAGE) ?? "";
  keyInput.addEventListener("change", () => {
    const key = keyInput.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    loadModels();
    refreshUsage();
  });
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("temperature").addEventListener("input", () => {
    temperatureChosen = true;
  });
  $("stop").addEventListener("click", stop);
  $("clear").addEventListener("click", newChat);
  showTurns();
  loadModels();
  refreshFleet();
  refreshUsage();
  startFleetCharts(headers, FLEET_EVERY_MS, (error) => {
    $("charts-status").className = error ? "error-text" : "muted";
    $("charts-status").textContent = error ? `Charts: ${error.message}` : "";
  });
}

start();
