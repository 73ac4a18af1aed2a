// Shared by the pages: the bearer token (this tab only) and calls to the service's API.
"use strict";

const TOKEN_KEY = "streamingt2v-token";

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  return headers;
}

// fetch() with the token; 401 raises Unauthorized, other errors ApiError with the server's detail.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  if (response.status === 401) throw new Unauthorized("this service needs a bearer token");
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try { detail = (await response.json()).detail ?? detail; } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response;
}

async function apiJson(path, options = {}) {
  return (await api(path, options)).json();
}

// A stored file (video, image) as an object URL: media elements cannot send the token themselves.
async function objectUrl(path) {
  return URL.createObjectURL(await (await api(path)).blob());
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function seconds(value) {
  return value === null || value === undefined ? "" : `${Number(value).toFixed(1)} s`;
}

function number(value) {
  if (value === null || value === undefined || value === "") return "";
  const n = Number(value);
  return Number.isFinite(n) ? (Math.abs(n) >= 100 || Number.isInteger(n) ? n.toFixed(0) : n.toPrecision(3)) : String(value);
}

// The token form, built into the page's #token-section: shown when the service answers 401;
// calls retry() once a token is entered.
function tokenForm(retry) {
  const section = document.getElementById("token-section");
  section.replaceChildren(
    el("h2", { id: "token-h" }, "Access token"),
    el("form", { id: "token-form" },
      el("div", { class: "field" },
        el("label", { for: "token" }, "Bearer token of this service"),
        el("input", { id: "token", name: "token", type: "password", autocomplete: "off",
                      "aria-describedby": "token-hint token-error" }),
        el("p", { class: "hint", id: "token-hint" },
          "Kept in this tab only (session storage); sent with every request."),
        el("p", { class: "error", id: "token-error", role: "alert" })),
      el("button", { type: "submit" }, "Use token")));
  const form = document.getElementById("token-form");
  const input = document.getElementById("token");
  const error = document.getElementById("token-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value);
    input.value = "";
    error.textContent = "";
    try {
      await retry();
      section.hidden = true;
    } catch (e) {
      error.textContent = e instanceof Unauthorized ? "That token was refused." : e.message;
    }
  });
  return (message) => {
    section.hidden = false;
    error.textContent = message || "";
    input.focus();
  };
}
