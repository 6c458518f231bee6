// RhymeFlow frontend extension.
//  * colours the pack's nodes so a RhymeFlow chain is easy to spot;
//  * draws the schedule (latent frames x steps) on RhymeFlowSampler / RhymeFlowKSampler.
// Everything the view shows comes from Python (POST /rhymeflow/schedule, the "rhymeflow.report" event
// after a run, and the "rhymeflow.compare" event when RhymeFlow Compare Videos judged this sampler's video): the step and latent frame counts, the roles, keyframes, caption, legend, colours
// and which widgets a preset overrides. This file only reads widget values off the graph (the sampler's,
// and those of the nodes upstream of it, as they are), draws the answer, and shows the server's error
// in place of the drawing when there is one.
// It works with the classic canvas and with Vue nodes ("Nodes 2.0"), ComfyUI frontend 1.32 to 1.58.
// This file is served as /extensions/<pack>/js/rhymeflow.js: three levels up is the frontend's root.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const RHYMEFLOW_COLOR = "#2a4858";
const RHYMEFLOW_BGCOLOR = "#3d6a80";
const VIEW_NODES = new Set(["RhymeFlowSampler", "RhymeFlowKSampler"]);
const SCHEDULE_WIDGETS = ["warmup_steps", "min_stride", "max_stride", "transition_1", "transition_2", "stride_schedule", "preset",
  "refresh_budget"];
const KEYFRAME_WIDGETS = ["strategy", "count", "similarity_threshold", "min_gap", "manual_frames"];
const POLL_MS = 400; // catches changes on other nodes (steps, video length, keyframes) and graph loads
const MAX_CHAIN = 12; // nodes followed upstream; the server refuses longer chains
const MAX_TEXT = 200; // longer text widgets (prompts) say nothing about steps or frames: not sent
const UI = { text: "#dde6ec", dim: "#9fb0bb", error: "#ff8a80", grid: "#0e1418", comparison: "#e1b5f0" }; // text only; the drawing's colours come from Python

// ---- reading the graph (values only: what they mean is decided in Python) ----------------------
function graphOf(node) {
  return node.graph ?? app.graph;
}

function widgetValue(node, name) {
  const w = node?.widgets?.find((w) => w.name === name);
  return w === undefined ? undefined : w.value;
}

function inputLink(node, index) {
  if (node.getInputLink) return node.getInputLink(index);
  const id = node.inputs?.[index]?.link; // frontends before node.getInputLink
  if (id == null) return null;
  const links = graphOf(node).links;
  return (links instanceof Map ? links.get(id) : links?.[id]) ?? null;
}

// The node and output slot feeding input `index` of `node`, or null.
function inputOrigin(node, index) {
  const link = index >= 0 ? inputLink(node, index) : null;
  if (!link) return null;
  const origin = graphOf(node).getNodeById(link.origin_id);
  return origin ? { node: origin, slot: link.origin_slot } : null;
}

function firstLinkedInput(node, types) {
  return (node.inputs ?? []).findIndex((input, i) => types.includes(input.type) && inputLink(node, i));
}

function outputNodes(node, slot = 0) {
  if (node.getOutputNodes) return node.getOutputNodes(slot) ?? [];
  const graph = graphOf(node);
  return (node.outputs?.[slot]?.links ?? [])
    .map((id) => (graph.links instanceof Map ? graph.links.get(id) : graph.links?.[id]))
    .filter(Boolean)
    .map((link) => graph.getNodeById(link.target_id))
    .filter(Boolean);
}

// A node as the server reads it: its class, the output slot used, and its plain widget values.
function describe(node, slot) {
  const widgets = {};
  for (const w of node.widgets ?? []) {
    const v = w.value;
    const plain = typeof v === "number" ? Number.isFinite(v) : typeof v === "boolean" || (typeof v === "string" && v.length <= MAX_TEXT);
    if (w.name && plain && !(w.name in widgets)) widgets[w.name] = v;
    if (Object.keys(widgets).length >= 48) break;
  }
  return { class_type: node.comfyClass ?? node.type, slot: slot ?? 0, widgets };
}

// The nodes upstream of `start`, nearest first, following the first linked input of one of `types`
// (legacy Reroute nodes are looked through: they are plumbing, not nodes that compute).
function chain(start, types) {
  const out = [];
  const seen = new Set();
  let current = start;
  while (current && out.length < MAX_CHAIN && !seen.has(current.node)) {
    const { node, slot } = current;
    seen.add(node);
    if (node.type === "Reroute") {
      current = inputOrigin(node, 0);
      continue;
    }
    out.push(describe(node, slot));
    current = inputOrigin(node, firstLinkedInput(node, types));
  }
  return out;
}

// What the server needs to know about the graph around a sampler node.
function graphContext(node) {
  if (node.comfyClass === "RhymeFlowKSampler") {
    return {
      sigmas: [describe(node, 0)], // its own steps and denoise
      latent: chain(inputOrigin(node, firstLinkedInput(node, ["LATENT"])), ["LATENT"]),
      model: chain(inputOrigin(node, firstLinkedInput(node, ["MODEL"])), ["MODEL"]),
    };
  }
  // RhymeFlowSampler: its SAMPLER goes to a runner (SamplerCustomAdvanced) that has the sigmas and the latent.
  const runner = outputNodes(node, 0).find((n) => firstLinkedInput(n, ["SIGMAS"]) >= 0);
  if (!runner) return {};
  return {
    sigmas: chain(inputOrigin(runner, firstLinkedInput(runner, ["SIGMAS"])), ["SIGMAS"]),
    latent: chain(inputOrigin(runner, firstLinkedInput(runner, ["LATENT"])), ["LATENT"]),
    model: chain(inputOrigin(runner, firstLinkedInput(runner, ["GUIDER", "MODEL"])), ["GUIDER", "MODEL"]),
  };
}

function requestBody(node) {
  const body = graphContext(node);
  for (const name of SCHEDULE_WIDGETS) {
    const v = widgetValue(node, name);
    if (v !== undefined) body[name] = v;
  }
  const kf = inputOrigin(node, (node.inputs ?? []).findIndex((i) => i.name === "keyframes"));
  if (kf) body.keyframes = Object.fromEntries(KEYFRAME_WIDGETS.map((n) => [n, widgetValue(kf.node, n)]));
  return body;
}

// ---- drawing -------------------------------------------------------------------------------------
// Cells are bucketed to at most one per pixel: a 10000-step, 4096-frame schedule draws as fast as a small one.
// A bucket of steps takes the strongest role in it (warm-up, then rhythmic, then active); a bucket of
// frames counts as a keyframe row if it holds a keyframe.
function bucketRoles(roles, columns) {
  const rank = { warmup: 2, rhythmic: 1, active: 0 };
  const out = [];
  for (let c = 0; c < columns; c++) {
    const from = Math.floor((c * roles.length) / columns);
    const to = Math.max(from + 1, Math.floor(((c + 1) * roles.length) / columns));
    let best = roles[from];
    for (let i = from + 1; i < to; i++) if (rank[roles[i]] > rank[best]) best = roles[i];
    out.push(best);
  }
  return out;
}

function keyframeRows(frames, keyframes, rows) {
  const out = new Array(rows).fill(false);
  for (const f of keyframes) if (f >= 0 && f < frames) out[Math.floor((f * rows) / frames)] = true;
  return out;
}

// Partial passes: the rows of frames refreshed in a bucket's active steps.
function refreshRows(view, columns, rows) {
  const out = [];
  for (let c = 0; c < columns; c++) {
    const from = Math.floor((c * view.steps) / columns);
    const to = Math.max(from + 1, Math.floor(((c + 1) * view.steps) / columns));
    out.push(keyframeRows(view.frames, (view.refresh ?? []).slice(from, to).flat(), rows));
  }
  return out;
}

function drawSchedule(ctx, view, width, height) {
  const colors = view.colors;
  const columns = Math.min(view.steps, Math.floor(width));
  const rows = Math.min(view.frames, Math.floor(height));
  const roles = bucketRoles(view.roles, columns);
  const kfRows = keyframeRows(view.frames, view.keyframes, rows);
  const refreshed = refreshRows(view, columns, rows);
  const cw = width / columns;
  const rh = height / rows;
  const gapX = cw > 3 ? 1 : 0;
  const gapY = rh > 3 ? 1 : 0;
  roles.forEach((role, c) => {
    const x = c * cw;
    const w = Math.max(cw - gapX, 0.5);
    for (let r = 0; r < rows; r++) {
      ctx.fillStyle = role !== "active" || kfRows[r] ? colors[role] : refreshed[c][r] ? colors.refresh : colors.skipped;
      ctx.fillRect(x, r * rh, w, Math.max(rh - gapY, 0.5));
    }
  });
  // Keyframe rows: a tick at the left edge; the step at whose end keyframes are chosen: a line.
  ctx.fillStyle = colors.keyframe;
  kfRows.forEach((on, r) => on && ctx.fillRect(0, r * rh, 3, Math.max(rh - gapY, 1)));
  ctx.fillRect(((view.detect_step + 1) * width) / view.steps - 1, 0, 2, height);
}

function showLegend(legend, view) {
  legend.replaceChildren();
  for (const item of view?.legend ?? []) {
    const entry = document.createElement("span");
    entry.style.cssText = "display:inline-flex;align-items:center;gap:3px;margin-right:8px;white-space:nowrap;";
    const swatch = document.createElement("span");
    swatch.style.cssText = `display:inline-block;width:9px;height:9px;border-radius:2px;background:${item.color};` +
      "outline:1px solid #445;";
    entry.append(swatch, document.createTextNode(item.label));
    legend.append(entry);
  }
}

function draw(state) {
  const { canvas, info, legend, view, error } = state;
  const available = state.element.clientWidth - 8; // inside the element's padding; 0 before it is laid out
  const width = Math.max(200, available > 0 ? available : 300);
  const height = 120;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = UI.grid;
  ctx.fillRect(0, 0, width, height);
  if (error || !view) {
    // Never a stale drawing: with an error only the error is shown.
    if (error) {
      ctx.strokeStyle = UI.error;
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(1, 1, width - 2, height - 2);
      ctx.fillStyle = UI.error;
      ctx.font = "11px sans-serif";
      ctx.fillText("no schedule: see the message below", 8, 18);
    }
    info.textContent = error ?? "RhymeFlow schedule: loading...";
    info.style.color = error ? UI.error : UI.dim;
    showLegend(legend, null);
    return;
  }
  drawSchedule(ctx, view, width, height);
  info.replaceChildren();
  for (const line of view.lines) info.append(document.createTextNode(`${line}\n`));
  if (state.comparison) {
    const comparison = document.createElement("span");
    comparison.className = "rhymeflow-comparison";
    comparison.style.color = UI.comparison;
    comparison.textContent = `${state.comparison}\n`;
    info.append(comparison);
  }
  for (const w of view.warnings) {
    const warning = document.createElement("span");
    warning.style.color = UI.error;
    warning.textContent = `! ${w}\n`;
    info.append(warning);
  }
  info.style.color = UI.text;
  showLegend(legend, view);
}

// Widgets a preset overrides are greyed out (and ignore input) while that preset is chosen; their own
// values stay, for custom. Which widgets, and the preset's values, come from the server.
function markPresetWidgets(node, view) {
  if (!view) return;
  let changed = false;
  for (const name of view.preset_widgets ?? []) {
    const widget = node.widgets?.find((w) => w.name === name);
    const controlled = name in (view.preset_values ?? {});
    if (widget && Boolean(widget.disabled) !== controlled) {
      widget.disabled = controlled;
      changed = true;
    }
  }
  if (changed) node.setDirtyCanvas?.(true, true);
}

function publish(state) {
  // Data attributes: what the view shows, for people inspecting it and for the browser test.
  const d = state.element.dataset;
  const v = state.view;
  d.rhymeflowNode = String(state.node.id);
  d.state = state.error ? "error" : v ? "ready" : "loading";
  const fields = ["steps", "frames", "roles", "warmup", "full", "active", "keyframes", "keyframesSource", "speedup", "lines",
    "presetControlled", "report", "comparison", "refreshes"];
  for (const f of fields) delete d[f];
  if (state.error) {
    d.error = state.error;
    return;
  }
  delete d.error;
  if (!v) return;
  Object.assign(d, {
    steps: v.steps, frames: v.frames, roles: v.roles.join(","), warmup: v.warmup_passes, full: v.full_passes,
    active: v.active_passes, keyframes: v.keyframes.join(","), keyframesSource: v.keyframes_source,
    speedup: v.ideal_speedup.toFixed(3), refreshes: (v.refresh ?? []).reduce((n, f) => n + f.length, 0),
    lines: JSON.stringify([...v.lines, ...(state.comparison ? [state.comparison] : []), ...v.warnings.map((w) => `! ${w}`)]),
    presetControlled: Object.keys(v.preset_values ?? {}).join(","),
  });
  if (state.report) d.report = JSON.stringify(state.report);
  if (state.comparison) d.comparison = state.comparison;
}

function render(state) {
  draw(state);
  publish(state);
  markPresetWidgets(state.node, state.error ? null : state.view);
}

// ---- keeping the view current ----------------------------------------------------------------------
async function refresh(node, force = false) {
  const state = node.rhymeflowView;
  if (!state || !node.graph) return; // not (or no longer) in a graph
  let body;
  try {
    body = requestBody(node);
  } catch (e) {
    return; // the graph is being rebuilt (a workflow loading): the next poll reads it
  }
  const key = JSON.stringify(body);
  if (!force && key === state.key) return;
  state.key = key;
  if (state.reportKey !== key) state.report = null; // the settings changed since that run
  if (state.comparisonKey !== key) state.comparison = null; // ... or since that comparison
  let view = null;
  let error = null;
  try {
    const payload = state.report ? { ...body, chosen_keyframes: state.report.keyframes } : body;
    const res = await api.fetchApi("/rhymeflow/schedule", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    const data = await res.json().catch(() => ({}));
    if (res.ok) view = data;
    else error = data.error ?? `RhymeFlow: the schedule request failed (HTTP ${res.status}).`;
  } catch (e) {
    error = `RhymeFlow: the schedule is unavailable (${e}).`;
  }
  if (state.key !== key) return; // a newer request is under way
  state.view = view;
  state.error = error;
  render(state);
}

function addScheduleView(node) {
  const element = document.createElement("div");
  element.className = "rhymeflow-schedule";
  element.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;box-sizing:border-box;padding:2px 4px;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "border-radius:4px;";
  const legend = document.createElement("div");
  legend.className = "rhymeflow-legend";
  legend.style.cssText = `font:10px/1.4 sans-serif;color:${UI.dim};display:flex;flex-wrap:wrap;`;
  const info = document.createElement("div");
  info.className = "rhymeflow-info";
  info.style.cssText = "font:10px/1.35 monospace;white-space:pre-wrap;";
  element.append(canvas, legend, info);
  const widget = node.addDOMWidget("rhymeflow_schedule", "rhymeflow-schedule", element, {
    serialize: false, // a drawing, not a value: stays out of widgets_values and the prompt
    hideOnZoom: false,
    getMinHeight: () => 290,
  });
  widget.serialize = false;
  node.rhymeflowView = { node, element, canvas, legend, info, view: null, report: null, error: null, key: null, reportKey: null,
    comparison: null, comparisonKey: null };
  render(node.rhymeflowView);

  // Immediate redraw when one of this node's widgets changes; changes elsewhere are polled.
  for (const w of node.widgets ?? []) {
    if (w === widget) continue;
    const original = w.callback;
    w.callback = function (...args) {
      const result = original?.apply(this, args);
      refresh(node);
      return result;
    };
  }
  const [minWidth] = node.size;
  node.setSize([Math.max(minWidth, 420), node.computeSize()[1]]);
  // After the current call stack: a node created while a workflow loads gets its values and links first.
  setTimeout(() => refresh(node, true), 0);
}

// The server sends node ids as strings; the graph may key nodes by number.
function nodeById(id) {
  return app.graph?.getNodeById?.(id) ?? app.graph?.getNodeById?.(Number(id));
}

// The settings a run or a comparison belongs to: it is shown until they change.
function settingsKey(node) {
  try {
    return JSON.stringify(requestBody(node));
  } catch (e) {
    return null;
  }
}

function onReport({ detail }) {
  const node = nodeById(detail.node);
  const state = node?.rhymeflowView;
  if (!state) return;
  state.report = detail.report;
  state.view = detail.view; // drawn by Python with the keyframes the run chose, and the run's own line
  state.error = null;
  state.comparison = null; // of an earlier run; this run's comes with its own event, if a compare node judges it
  state.reportKey = settingsKey(node);
  state.key = state.reportKey;
  render(state);
}

// RhymeFlow Compare Videos judged a video these samplers made: their views add the server's one-line summary.
function onComparison({ detail }) {
  for (const id of detail.samplers ?? []) {
    const state = nodeById(id)?.rhymeflowView;
    if (!state) continue;
    state.comparison = detail.line;
    state.comparisonKey = settingsKey(state.node);
    render(state);
  }
}

app.registerExtension({
  name: "rhymeflow.appearance",
  nodeCreated(node) {
    if (node.comfyClass && node.comfyClass.startsWith("RhymeFlow")) {
      node.color = node.color || RHYMEFLOW_COLOR;
      node.bgcolor = node.bgcolor || RHYMEFLOW_BGCOLOR;
    }
  },
});

// A RhymeFlowSampler saved before the preset input existed has 7 widget values and no preset: it ran its own
// widgets, so it loads as custom whatever the preset's default is now (the default is balanced since 2026-11,
// docs/ui.md "Defaults"). A saved preset value, custom included, is kept as saved.
const PRESETLESS = { RhymeFlowSampler: { values: 7, preset: "custom" } };

function keepOldPreset(node, info) {
  const legacy = PRESETLESS[node.comfyClass];
  const values = info?.widgets_values;
  if (!legacy || !values) return;
  const saved = Array.isArray(values) ? values.length > legacy.values : "preset" in values;
  const widget = node.widgets?.find((w) => w.name === "preset");
  if (!saved && widget) widget.value = legacy.preset;
}

app.registerExtension({
  name: "rhymeflow.scheduleView",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!(nodeData?.name in PRESETLESS)) return;
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const result = onConfigure?.apply(this, arguments);
      keepOldPreset(this, info);
      return result;
    };
  },
  setup() {
    api.addEventListener("rhymeflow.report", onReport);
    api.addEventListener("rhymeflow.compare", onComparison);
    setInterval(() => {
      for (const node of app.graph?.nodes ?? app.graph?._nodes ?? []) {
        if (node.rhymeflowView) refresh(node);
      }
    }, POLL_MS);
  },
  nodeCreated(node) {
    if (VIEW_NODES.has(node.comfyClass)) addScheduleView(node);
  },
});
