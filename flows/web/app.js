// The page at /: make a video, follow the jobs, watch a video grow chunk by chunk.
"use strict";

const FIELDS = ["prompt", "prompt_schedule", "num_frames", "seed", "num_inference_steps", "refine"];
const ACTIVE = ["queued", "running"];
const POLL_MS = 2000;

const state = {
  service: null,     // GET /v1/service
  jobs: new Map(),   // id -> its list item
  watching: null,    // { id, abort, chunks, previewQueue, previewAt, finalLoaded }
  pollTimer: null,
};

const $ = (id) => document.getElementById(id);
const askToken = tokenForm(start);

// --- the form ----------------------------------------------------------------------------------------

// Ranges and help text come from the API's own schema (the request's one definition).
async function describeFields() {
  const schema = await (await fetch("/openapi.json")).json();
  const properties = schema.components.schemas.VideoBody.properties;
  for (const name of FIELDS) {
    const spec = properties[name];
    const input = $(`f-${name}`);
    const hint = $(`hint-${name}`);
    if (!spec || !input) continue;
    const bounds = spec.anyOf ? spec.anyOf.find((s) => s.type !== "null") || {} : spec;
    if (bounds.minimum !== undefined) input.min = bounds.minimum;
    if (bounds.maximum !== undefined && !input.max) input.max = bounds.maximum;
    if (hint && spec.description) hint.textContent = spec.description;
  }
}

function readForm() {
  const body = { prompt: $("f-prompt").value, refine: $("f-refine").checked };
  if (state.service) body.preset = state.service.preset;
  const schedule = $("f-prompt_schedule").value.trim();
  if (schedule) body.prompt_schedule = schedule;
  for (const name of ["num_frames", "seed", "num_inference_steps"]) {
    const raw = $(`f-${name}`).value.trim();
    if (raw === "" && name === "num_inference_steps") continue;
    body[name] = raw === "" ? null : Number(raw);  // the server names what is wrong with it
  }
  return body;
}

function clearErrors() {
  for (const node of document.querySelectorAll("#video-form .error")) node.textContent = "";
  for (const node of document.querySelectorAll("#video-form [aria-invalid]")) node.removeAttribute("aria-invalid");
}

// The server's 422 detail, each message next to the field it names.
function showErrors(detail) {
  if (!Array.isArray(detail)) {
    $("err-form").textContent = String(detail);
    return;
  }
  let first = null;
  for (const item of detail) {
    const loc = item.loc || [];
    const field = loc[0] === "body" && loc.length > 1 ? String(loc[1]) : null;
    const target = field && $(`err-${field}`);
    const message = item.msg || JSON.stringify(item);
    if (target) {
      target.textContent = target.textContent ? `${target.textContent} ${message}` : message;
      const input = $(`f-${field}`);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        first = first || input;
      }
    } else {
      $("err-form").textContent += `${field ? field + ": " : ""}${message} `;
    }
  }
  if (first) first.focus();
}

async function submitVideo(event) {
  event.preventDefault();
  clearErrors();
  const button = $("submit");
  button.disabled = true;
  try {
    const job = await apiJson("/v1/videos", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(readForm()),
    });
    await refreshJobs();
    watch(job.id);
  } catch (e) {
    if (e instanceof Unauthorized) askToken(e.message);
    else if (e instanceof ApiError && e.status === 422) showErrors(e.detail);
    else $("err-form").textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

// --- the job list ------------------------------------------------------------------------------------

function progressText(job) {
  const total = job.chunks_total ?? "?";
  const stage = job.stage ? `, ${job.stage}` : "";
  return `${job.status}${stage}: ${job.chunks_done} of ${total} chunks`;
}

function jobItem(job) {
  const item = el("li", { class: "job", "data-id": job.id });
  const title = el("p", { class: "prompt" });
  const status = el("span", { class: "status" });
  const progress = el("progress", { max: 1, value: 0 });
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", class: "watch", onclick: () => watch(job.id) }, "Watch"),
    el("button", { type: "button", class: "cancel", onclick: () => cancel(job.id) }, "Cancel"),
    el("button", { type: "button", class: "again", onclick: () => runAgain(job.id) }, "Run again"));
  const error = el("p", { class: "error", role: "status" });
  item.append(title, el("div", { class: "line" }, status, progress), actions, error);
  item.job = job;
  return item;
}

function updateItem(item, job) {
  item.job = job;
  item.dataset.status = job.status;
  const [title, line, actions, error] = item.children;
  title.textContent = `${job.prompt} · ${job.num_frames} frames`;
  const [status, progress] = line.children;
  status.textContent = progressText(job);
  progress.max = job.chunks_total || 1;
  progress.value = job.status === "done" ? progress.max : job.chunks_done;
  progress.setAttribute("aria-label", `progress of ${job.id}: ${progressText(job)}`);
  for (const button of actions.children) button.setAttribute("aria-label", `${button.textContent} ${job.prompt}`);
  actions.querySelector(".cancel").hidden = !ACTIVE.includes(job.status);
  actions.querySelector(".again").hidden = !["failed", "cancelled"].includes(job.status);
  error.textContent = job.error && job.status !== "done" ? job.error : "";
}

function renderJobs(jobs) {
  const list = $("jobs");
  $("jobs-empty").hidden = jobs.length > 0;
  jobs.forEach((job, index) => {
    let item = state.jobs.get(job.id);
    if (!item) {
      item = jobItem(job);
      state.jobs.set(job.id, item);
    }
    updateItem(item, job);
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  const seen = new Set(jobs.map((job) => job.id));
  for (const [id, item] of state.jobs) {
    if (!seen.has(id)) { item.remove(); state.jobs.delete(id); }
  }
  if (state.watching) {
    const job = jobs.find((j) => j.id === state.watching.id);
    if (job) showStatus(job);
  }
}

async function refreshJobs() {
  const { jobs } = await apiJson("/v1/videos?limit=50");
  renderJobs(jobs);
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(async () => {
    try { await refreshJobs(); } catch (e) { if (e instanceof Unauthorized) { askToken(e.message); return; } }
    schedulePoll();
  }, POLL_MS);
}

async function cancel(id) {
  const item = state.jobs.get(id);
  try {
    const job = await apiJson(`/v1/videos/${id}`, { method: "DELETE" });
    updateItem(item, job);
  } catch (e) {
    item.querySelector(".error").textContent = e.message;
  }
}

async function runAgain(id) {
  const item = state.jobs.get(id);
  try {
    await apiJson("/v1/videos", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(item.job.params),
    });
    await refreshJobs();
    watch(id);
  } catch (e) {
    item.querySelector(".error").textContent = Array.isArray(e.detail) ? e.detail.map((d) => d.msg).join(" ") : e.message;
  }
}

// --- watching one video ------------------------------------------------------------------------------

function showStatus(job) {
  const text = job.error && ["failed", "cancelled"].includes(job.status) ? `${progressText(job)} (${job.error})`
    : progressText(job);
  $("watch-status").textContent = text;
  $("watch-progress").max = job.chunks_total || 1;
  $("watch-progress").value = job.status === "done" ? (job.chunks_total || 1) : job.chunks_done;
}

function watch(id) {
  if (state.watching) {
    state.watching.abort.abort();
    for (const url of state.watching.urls) URL.revokeObjectURL(url);
  }
  const watching = { id, abort: new AbortController(), chunks: new Set(), previewQueue: [], previewAt: -1,
                     urls: [], finalLoaded: false, lastEvent: null };
  state.watching = watching;
  $("watch").hidden = false;
  $("watch-id").textContent = id.slice(0, 12);
  const item = state.jobs.get(id);
  $("watch-prompt").textContent = item ? item.job.prompt : "";
  if (item) showStatus(item.job);
  $("chunks").replaceChildren();
  $("final-figure").hidden = true;
  $("final").removeAttribute("src");
  $("preview").removeAttribute("src");
  $("preview-caption").textContent = "Growing preview (low resolution): waiting for the first chunk";
  follow(watching);
}

// Server-sent events read with fetch (EventSource cannot send the token); reconnects with
// Last-Event-ID until the job's last event.
async function follow(watching) {
  while (state.watching === watching) {
    try {
      const headers = watching.lastEvent !== null ? { "Last-Event-ID": String(watching.lastEvent) } : {};
      const response = await api(`/v1/videos/${watching.id}/stream`, { headers, signal: watching.abort.signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (await onEvent(watching, block)) return;
        }
      }
    } catch (e) {
      if (watching.abort.signal.aborted) return;
      if (e instanceof Unauthorized) { askToken(e.message); return; }
      if (e instanceof ApiError && e.status === 404) { $("watch-status").textContent = e.message; return; }
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// One event block; true when it ends the job's stream.
async function onEvent(watching, block) {
  let name = "message", data = "", id = null;
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (key === "event") name = value;
    else if (key === "data") data += value;
    else if (key === "id") id = value;
  }
  if (!data) return false;
  const payload = JSON.parse(data);
  if (name === "chunk") {
    watching.lastEvent = id !== null ? Number(id) : payload.index;
    await addChunk(watching, payload);
    $("watch-progress").max = payload.chunks_total || 1;
    $("watch-progress").value = watching.chunks.size;
    return false;
  }
  showStatus(payload);
  if (name === "done") await showFinal(watching, payload);
  await refreshJobs().catch(() => {});
  return true;
}

async function addChunk(watching, chunk) {
  if (watching.chunks.has(chunk.index)) return;
  watching.chunks.add(chunk.index);
  const url = await objectUrl(chunk.url);
  if (state.watching !== watching) { URL.revokeObjectURL(url); return; }
  watching.urls.push(url);
  const [start, stop] = chunk.frames;
  const video = el("video", { class: "chunk-preview", src: url, muted: true, playsinline: true, controls: true,
                              preload: "auto", "aria-label": `chunk ${chunk.index}: frames ${start} to ${stop - 1}` });
  video.muted = true;
  $("chunks").append(el("li", {}, video, el("span", {}, `chunk ${chunk.index} · frames ${start}–${stop - 1}`)));
  watching.previewQueue[chunk.index] = { url, index: chunk.index, frames: chunk.frames };
  if (watching.previewAt < 0 || $("preview").ended) playPreview(watching, watching.previewAt + 1);
}

// The growing preview plays the chunks in order, waiting at the end for the next one to arrive.
function playPreview(watching, index) {
  const chunk = watching.previewQueue[index];
  if (!chunk || state.watching !== watching) return;
  watching.previewAt = index;
  const preview = $("preview");
  preview.src = chunk.url;
  preview.play().catch(() => {});
  $("preview-caption").textContent = `Growing preview (low resolution): chunk ${chunk.index}, `
    + `frames ${chunk.frames[0]}–${chunk.frames[1] - 1}; the chunks play in order as they are made`;
}

$("preview").addEventListener("ended", () => {
  const watching = state.watching;
  if (watching) playPreview(watching, watching.previewAt + 1);
});

async function showFinal(watching, job) {
  if (watching.finalLoaded) return;
  watching.finalLoaded = true;
  try {
    const url = await objectUrl(job.video_url);
    if (state.watching !== watching) { URL.revokeObjectURL(url); return; }
    watching.urls.push(url);
    $("final").src = url;
    $("download").href = url;
    $("download").download = `${watching.id}.mp4`;
    $("final-figure").hidden = false;
  } catch (e) {
    $("watch-status").textContent = `the final video could not be loaded: ${e.message}`;
  }
}

// --- batches -----------------------------------------------------------------------------------------

async function listBatches() {
  const { batches } = await apiJson("/v1/batches");
  $("batches-section").hidden = batches.length === 0;
  $("batches").replaceChildren(...batches.map((b) => el("li", {},
    el("a", { href: b.page_url }, `batch ${b.batch_id}`),
    ` · ${b.videos} videos (${Object.entries(b.counts).map(([k, v]) => `${v} ${k}`).join(", ")}) · ${b.uri}`)));
}

// --- start -------------------------------------------------------------------------------------------

async function start() {
  const service = await apiJson("/v1/service");
  state.service = service;
  $("f-num_frames").max = service.max_frames;
  $("f-num_inference_steps").max = service.max_steps;
  $("service-line").textContent = `Preset ${service.preset} · up to ${service.max_frames} frames · `
    + `${service.active_jobs} of ${service.max_queue} job slots in use`;
  await refreshJobs();
  schedulePoll();
  listBatches().catch(() => {});
}

$("video-form").addEventListener("submit", submitVideo);
describeFields().catch(() => {});
start().catch((e) => {
  if (e instanceof Unauthorized) { $("service-line").textContent = "This service needs a bearer token."; askToken(); }
  else $("service-line").textContent = `The service did not answer: ${e.message}`;
});
