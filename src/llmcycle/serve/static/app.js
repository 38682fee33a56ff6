// llmcycle web chat: streams replies from /v1/chat/completions, keeps the conversation, sends feedback.
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log");
let history = [];          // [{role, content}] user/assistant turns shown so far
let busy = false;

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("apikey").value || localStorage.getItem("llmcycle-key") || "";
  if (key) { h["Authorization"] = "Bearer " + key; localStorage.setItem("llmcycle-key", key); }
  return h;
}

function knobs() {
  const out = {};
  for (const name of ["temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed"]) {
    const v = $(name).value;
    if (v !== "") out[name] = Number(v);
  }
  return out;
}

function messagesFor(turns) {
  const keep = Math.max(0, Number($("memory").value || 0));
  const users = turns.filter((m) => m.role === "user").length;
  let skip = Math.max(0, users - 1 - keep), out = [];
  for (const m of turns) {
    if (skip > 0) { if (m.role === "assistant") skip -= 1; continue; }
    out.push(m);
  }
  const system = $("system").value.trim();
  return system ? [{role: "system", content: system}, ...out] : out;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text || "";
  div.appendChild(body);
  return div;
}

// POST a chat request and stream it; onDelta(index, text), returns [{id, text, finish}] per choice.
async function streamChat(messages, n) {
  const body = {model: "", messages, stream: true, n, ...knobs()};
  const res = await fetch("/v1/chat/completions", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

async function readStream(res, onDelta) {
  const reader = res.body.getReader(), decoder = new TextDecoder();
  const choices = {};
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      if (!frame.startsWith("data: ")) continue;
      const data = frame.slice(6);
      if (data === "[DONE]") return choices;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const c of chunk.choices) {
        const slot = choices[c.index] || (choices[c.index] = {id: c.response_id || chunk.id, text: "", finish: null});
        if (c.delta && c.delta.content) { slot.text += c.delta.content; onDelta(c.index, slot.text); }
        if (c.finish_reason) slot.finish = c.finish_reason;
      }
    }
  }
  return choices;
}

async function feedback(body) {
  const res = await fetch("/v1/feedback", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  if (!res.ok) throw new Error((await res.json()).error.message);
  return res.json();
}

function addTools(div, reply, turnIndex) {
  const tools = document.createElement("div");
  tools.className = "tools";
  const up = document.createElement("button"), down = document.createElement("button");
  up.textContent = "👍"; up.className = "up"; up.title = "good reply";
  down.textContent = "👎"; down.className = "down"; down.title = "bad reply";
  const rate = async (rating, btn) => {
    await feedback({response_id: reply.id, rating});
    up.classList.remove("on"); down.classList.remove("on"); btn.classList.add("on");
    div.dataset.rated = String(rating);
  };
  up.onclick = () => rate(1, up).catch(status);
  down.onclick = () => rate(-1, down).catch(status);
  const another = document.createElement("button");
  another.textContent = "show me another answer"; another.className = "another";
  another.onclick = () => compare(div, turnIndex).catch(status);
  tools.append(up, down, another);
  div.appendChild(tools);
}

function status(err) { $("status").textContent = err ? String(err.message || err) : ""; }

async function send(text) {
  if (busy || !text.trim()) return;
  busy = true; status("");
  history.push({role: "user", content: text});
  log.appendChild(bubble("user", text));
  const div = bubble("assistant", "");
  log.appendChild(div);
  try {
    const res = await streamChat(messagesFor(history), 1);
    const choices = await readStream(res, (i, t) => { div.querySelector(".text").textContent = t; log.scrollTop = 1e9; });
    const reply = choices[0];
    div.dataset.id = reply.id; div.dataset.finish = reply.finish;
    if (reply.finish === "content_filter") div.classList.add("filtered");
    history.push({role: "assistant", content: reply.text});
    addTools(div, reply, history.length - 1);
    div.dataset.done = "1";
  } catch (err) {
    history.pop(); div.remove(); status(err);
  } finally { busy = false; }
}

// Two fresh answers to the same turn, side by side; the one picked replaces the reply, as a pairwise preference.
async function compare(div, turnIndex) {
  if (busy) return;
  busy = true; status("");
  const pair = document.createElement("div");
  pair.className = "pair";
  const sides = [bubble("assistant", ""), bubble("assistant", "")];
  sides.forEach((s) => pair.appendChild(s));
  div.after(pair);
  try {
    const res = await streamChat(messagesFor(history.slice(0, turnIndex)), 2);
    const choices = await readStream(res, (i, t) => { sides[i].querySelector(".text").textContent = t; });
    sides.forEach((side, i) => {
      const pick = document.createElement("button");
      pick.textContent = "this one is better"; pick.className = "pick";
      pick.onclick = async () => {
        await feedback({chosen_id: choices[i].id, rejected_id: choices[1 - i].id}).catch(status);
        history[turnIndex] = {role: "assistant", content: choices[i].text};
        div.querySelector(".text").textContent = choices[i].text;
        div.dataset.id = choices[i].id;
        pair.remove();
        div.dataset.picked = choices[i].id;
      };
      side.dataset.id = choices[i].id;
      side.appendChild(pick);
    });
    pair.dataset.done = "1";
  } catch (err) { pair.remove(); status(err); } finally { busy = false; }
}

$("form").onsubmit = (e) => { e.preventDefault(); const t = $("input").value; $("input").value = ""; send(t); };
$("input").onkeydown = (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); } };
$("reset").onclick = () => { history = []; log.innerHTML = ""; status(""); };
fetch("/v1/models", {headers: headers()}).then((r) => r.json()).then((j) => {
  $("model").textContent = j.data ? j.data[0].id : (j.error ? j.error.message : "");
}).catch(status);
