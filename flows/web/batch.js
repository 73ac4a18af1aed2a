// The page at /batches/<id>: a batch manifest's rows, read-only.
"use strict";

const batchId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const thumbnails = new Map();  // video_id -> object URL of its thumbnail
const METRICS = ["scuts", "ofs", "warp_error", "mawe", "flow_std", "clip_score", "aesthetic_score", "reid"];
const askToken = tokenForm(async () => { await load(); setTimeout(refresh, 5000); });
let shown = "";  // the rows on the page, as JSON: unchanged rows are not rebuilt (a playing video keeps playing)
document.getElementById("batch-id").textContent = batchId;

async function thumbnailCell(row) {
  const cell = el("td");
  if (!row.thumbnail_url) return cell;
  let url = thumbnails.get(row.video_id);
  if (!url) {
    url = await objectUrl(row.thumbnail_url);
    thumbnails.set(row.video_id, url);
  }
  const image = el("img", { class: "thumb", src: url, alt: `first frame of ${row.prompt}` });
  const link = el("a", { href: "#", "aria-label": `play ${row.prompt}` }, image);
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const video = el("video", { class: "thumb", controls: true, autoplay: true, muted: true,
                                src: await objectUrl(row.video_url), "aria-label": `video of ${row.prompt}` });
    video.muted = true;
    link.replaceWith(video);
  });
  cell.append(link);
  return cell;
}

async function render(batch) {
  const counts = Object.entries(batch.counts).map(([k, v]) => `${v} ${k}`).join(", ");
  document.getElementById("summary").textContent = `${batch.rows.length} videos (${counts}) · ${batch.uri}`;
  const body = document.querySelector("#rows tbody");
  const rows = [];
  for (const row of batch.rows) {
    const timings = ["init_s", "extend_s", "refine_s", "total_s"].filter((k) => row[k] !== null)
      .map((k) => `${k.replace("_s", "")} ${seconds(row[k])}`).join(", ");
    const metrics = METRICS.filter((k) => row[k] !== null).map((k) => `${k} ${number(row[k])}`).join(", ");
    const status = el("td", { "data-status": row.status }, row.status,
                      row.error ? el("p", { class: "error" }, row.error) : null);
    rows.push(el("tr", { "data-id": row.video_id }, await thumbnailCell(row), el("td", { class: "prompt" }, row.prompt),
      status, el("td", {}, `${row.init_status} / ${row.extend_status} / ${row.refine_status}`),
      el("td", { class: "num" }, String(row.num_frames)),
      el("td", { class: "num" }, `${row.chunks_done} / ${row.chunks_total ?? "?"}`),
      el("td", {}, timings), el("td", {}, metrics)));
  }
  body.replaceChildren(...rows);
}

async function load() {
  const batch = await apiJson(`/v1/batches/${encodeURIComponent(batchId)}`);
  const json = JSON.stringify(batch);
  if (json !== shown) {
    await render(batch);
    shown = json;
  }
}

async function refresh() {
  try {
    await load();
  } catch (e) {
    if (e instanceof Unauthorized) { askToken(e.message); return; }
    document.getElementById("summary").textContent = e.message;
  }
  // a batch that still runs changes; a finished one is cheap to read again
  setTimeout(refresh, 5000);
}

refresh();
