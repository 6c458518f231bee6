// RhymeFlow frontend extension.
//  * colours the pack's nodes so a RhymeFlow chain is easy to spot;
//  * draws the schedule (latent frames x steps) on RhymeFlowSampler / RhymeFlowKSampler.
// The schedule itself always comes from Python (POST /rhymeflow/schedule, and the "rhymeflow.report"
// event after a run): this file only finds the widget values and draws what the server returns.
// This file is served as /extensions/<pack>/js/rhymeflow.js: three levels up is the frontend's root.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const RHYMEFLOW_COLOR = "#2a4858";
const RHYMEFLOW_BGCOLOR = "#3d6a80";
const VIEW_NODES = new Set(["RhymeFlowSampler", "RhymeFlowKSampler"]);
const SCHEDULE_WIDGETS = ["warmup_steps", "min_stride", "max_stride", "transition_1", "transition_2", "stride_schedule", "preset"];
const KEYFRAME_WIDGETS = ["strategy", "count", "similarity_threshold", "min_gap", "manual_frames"];
const FALLBACK = { steps: 30, frames: 21 }; // when the graph does not tell (nothing connected yet)
const POLL_MS = 400; // catches changes on other nodes (steps, video length, keyframes) and graph loads
const COLORS = {
  warmup: "#6b7f91", rhythmic: "#e0a030", active: "#36b3d6", skipped: "#1c2830",
  keyframe: "#ffffff", text: "#dde6ec", dim: "#9fb0bb", error: "#ff8a80", grid: "#0e1418",
};

// ---- reading the graph -----------------------------------------------------------------------
function widgetValue(node, name) {
  const w = node?.widgets?.find((w) => w.name === name);
  return w === undefined ? undefined : w.value;
}

function linkById(graph, id) {
  const links = graph.links;
  return links instanceof Map ? links.get(id) : links?.[id];
}

function upstream(node, inputName) {
  const input = node?.inputs?.find((i) => i.name === inputName);
  if (!input || input.link == null) return null;
  const link = linkById(node.graph ?? app.graph, input.link);
  if (!link) return null;
  const origin = (node.graph ?? app.graph).getNodeById(link.origin_id);
  return origin ? { node: origin, slot: link.origin_slot } : null;
}

function consumers(node, slot = 0) {
  const graph = node.graph ?? app.graph;
  return (node.outputs?.[slot]?.links ?? [])
    .map((id) => linkById(graph, id))
    .filter(Boolean)
    .map((link) => graph.getNodeById(link.target_id))
    .filter(Boolean);
}

// Steps of a SIGMAS output: a scheduler's `steps` widget, through SplitSigmas halves.
function stepsOf(source, depth = 0) {
  if (!source || depth > 8) return null;
  const { node, slot } = source;
  const steps = widgetValue(node, "steps");
  if (typeof steps === "number") return steps;
  if (node.comfyClass === "SplitSigmas") {
    const total = stepsOf(upstream(node, "sigmas"), depth + 1);
    if (total == null) return null;
    const split = Math.min(widgetValue(node, "step") ?? 0, total);
    return slot === 0 ? split : total - split;
  }
  return null;
}

// Latent frames of a LATENT: a video latent node's `length` (4 pixel frames per latent frame, plus
// the first), through samplers that pass a latent on.
function framesOf(source, depth = 0) {
  if (!source || depth > 8) return null;
  const length = widgetValue(source.node, "length");
  if (typeof length === "number") return Math.floor((length - 1) / 4) + 1;
  for (const name of ["latent_image", "samples", "latent"]) {
    const up = upstream(source.node, name);
    if (up) return framesOf(up, depth + 1);
  }
  return null;
}

function samplingContext(node) {
  if (node.comfyClass === "RhymeFlowKSampler") {
    return { steps: widgetValue(node, "steps"), frames: framesOf(upstream(node, "latent_image")) };
  }
  const runner = consumers(node).find((n) => upstream(n, "sigmas"));
  if (!runner) return { steps: null, frames: null };
  return { steps: stepsOf(upstream(runner, "sigmas")), frames: framesOf(upstream(runner, "latent_image")) };
}

function requestBody(node) {
  const ctx = samplingContext(node);
  const body = { steps: ctx.steps ?? FALLBACK.steps, frames: ctx.frames ?? FALLBACK.frames };
  for (const name of SCHEDULE_WIDGETS) {
    const v = widgetValue(node, name);
    if (v !== undefined) body[name] = v;
  }
  const kf = upstream(node, "keyframes");
  if (kf) body.keyframes = Object.fromEntries(KEYFRAME_WIDGETS.map((n) => [n, widgetValue(kf.node, n)]));
  body.guessed = { steps: ctx.steps == null, frames: ctx.frames == null };
  return body;
}

// ---- drawing ---------------------------------------------------------------------------------
function draw(state) {
  const { canvas, info, view, report, error, body } = state;
  const el = state.element;
  const width = Math.max(200, el.clientWidth || 300);
  const height = 120;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = COLORS.grid;
  ctx.fillRect(0, 0, width, height);
  if (!view) {
    info.textContent = error ? error : "RhymeFlow schedule: loading...";
    info.style.color = error ? COLORS.error : COLORS.dim;
    return;
  }
  const keyframes = new Set(view.keyframes);
  const cw = width / view.steps;
  const rh = height / view.frames;
  view.roles.forEach((role, i) => {
    for (let f = 0; f < view.frames; f++) {
      const computed = role !== "active" || keyframes.has(f);
      ctx.fillStyle = computed ? COLORS[role] : COLORS.skipped;
      ctx.fillRect(i * cw, f * rh, Math.max(cw - (cw > 3 ? 1 : 0), 0.5), Math.max(rh - (rh > 3 ? 1 : 0), 0.5));
    }
  });
  // Keyframe rows: a white tick at the left edge; the step where they are chosen: a white line.
  ctx.fillStyle = COLORS.keyframe;
  for (const f of keyframes) ctx.fillRect(0, f * rh, 3, Math.max(rh - 1, 1));
  ctx.fillRect((view.detect_step + 1) * cw - 1, 0, 2, height);

  const source = view.keyframes_source === "chosen" ? "chosen in the last run" : "planned";
  const pending = view.keyframes_pending ? ` + ${view.keyframes_pending} picked by content at step ${view.detect_step + 1}` : "";
  const guessed = [body?.guessed?.steps && "steps", body?.guessed?.frames && "frames"].filter(Boolean);
  const lines = [
    `${view.steps} steps x ${view.frames} latent frames (${view.preset}: warm-up ${view.warmup_steps}, strides ` +
      `${view.min_stride}-${view.max_stride})${guessed.length ? `, ${guessed.join(" and ")} assumed (connect a scheduler / video latent)` : ""}`,
    `warm-up ${view.warmup_steps} + rhythmic ${view.full_passes - view.warmup_steps} = ${view.full_passes} full passes, ` +
      `${view.active_passes} active passes; ideal speedup ${view.ideal_speedup.toFixed(2)}x (${view.active_cost_note})`,
    `keyframes ${source}: [${view.keyframes.join(", ")}]${pending}`,
  ];
  if (report) {
    lines.push(`last run: ${report.full_passes} full / ${report.active_passes} active, sampler ${report.sampler_seconds.toFixed(2)} s, ` +
      `saved about ${Math.max(report.seconds_saved, 0).toFixed(2)} s vs dense (est. ${report.estimated_dense_seconds.toFixed(2)} s)`);
  }
  for (const w of view.warnings) lines.push(`! ${w}`);
  info.textContent = lines.join("\n");
  info.style.color = view.warnings.length ? COLORS.error : COLORS.text;
}

function publish(state) {
  // Data attributes: what the drawing shows, for people inspecting it and for the browser test.
  const d = state.element.dataset;
  const v = state.view;
  d.state = state.error ? "error" : v ? "ready" : "loading";
  if (v) {
    d.steps = v.steps;
    d.frames = v.frames;
    d.roles = v.roles.join(",");
    d.warmup = v.warmup_steps;
    d.full = v.full_passes;
    d.active = v.active_passes;
    d.keyframes = v.keyframes.join(",");
    d.keyframesSource = v.keyframes_source;
    d.speedup = v.ideal_speedup.toFixed(3);
  }
  if (state.report) d.report = JSON.stringify(state.report);
  else delete d.report;
}

function render(state) {
  draw(state);
  publish(state);
}

// ---- keeping the view current ----------------------------------------------------------------
async function refresh(node, force = false) {
  const state = node.rhymeflowView;
  if (!state) return;
  const body = requestBody(node);
  const key = JSON.stringify(body);
  if (!force && key === state.key) return;
  state.key = key;
  if (state.reportKey !== key) state.report = null; // the settings changed since that run
  try {
    const payload = { ...body };
    delete payload.guessed;
    if (state.report) payload.chosen_keyframes = state.report.keyframes;
    const res = await api.fetchApi("/rhymeflow/schedule", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    const data = await res.json();
    if (state.key !== key) return; // a newer request is under way
    state.body = body;
    state.error = res.ok ? null : data.error ?? `schedule request failed (${res.status})`;
    state.view = res.ok ? data : state.view;
  } catch (e) {
    state.error = `RhymeFlow schedule unavailable: ${e}`;
  }
  render(state);
}

function addScheduleView(node) {
  const element = document.createElement("div");
  element.className = "rhymeflow-schedule";
  element.dataset.rhymeflowNode = String(node.id);
  element.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;box-sizing:border-box;padding:2px 4px;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "border-radius:4px;";
  const info = document.createElement("div");
  info.style.cssText = "font:10px/1.35 monospace;white-space:pre-wrap;";
  element.append(canvas, info);
  const widget = node.addDOMWidget("rhymeflow_schedule", "rhymeflow-schedule", element, {
    serialize: false, // a drawing, not a value: stays out of widgets_values and the prompt
    hideOnZoom: false,
    getMinHeight: () => 230,
  });
  widget.serialize = false;
  node.rhymeflowView = { element, canvas, info, view: null, report: null, error: null, key: null, reportKey: null };
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

function onReport({ detail }) {
  // The server sends the id as a string; the graph may key nodes by number.
  const node = app.graph?.getNodeById?.(detail.node) ?? app.graph?.getNodeById?.(Number(detail.node));
  const state = node?.rhymeflowView;
  if (!state) return;
  state.report = detail.report;
  state.view = detail.view;
  state.error = null;
  state.reportKey = JSON.stringify(requestBody(node)); // shown until the settings change
  state.key = state.reportKey;
  render(state);
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

app.registerExtension({
  name: "rhymeflow.scheduleView",
  setup() {
    api.addEventListener("rhymeflow.report", onReport);
    setInterval(() => {
      for (const node of app.graph?._nodes ?? app.graph?.nodes ?? []) {
        if (node.rhymeflowView) refresh(node);
      }
    }, POLL_MS);
  },
  nodeCreated(node) {
    if (VIEW_NODES.has(node.comfyClass)) addScheduleView(node);
  },
});
