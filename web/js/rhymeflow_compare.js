// RhymeFlow Compare: shows the node's report (PSNR, SSIM, temporal error, time) on the node after a run.
// The text comes from Python as the node's UI output {"text": [report]}; ComfyUI's frontend does not
// display that on arbitrary nodes, so this adds one read-only text box. It is neither saved with the
// workflow nor sent with the prompt, so saved widget values stay in the node's input order.
// Served as /extensions/<pack>/js/rhymeflow_compare.js: three levels up is the frontend's root.
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

const NODE = "RhymeFlowCompare";
const WIDGET = "rhymeflow_report";
const PLACEHOLDER = "Queue the workflow: PSNR, SSIM, temporal error and the time saved appear here.";

function reportWidget(node) {
  return node.widgets?.find((w) => w.name === WIDGET);
}

app.registerExtension({
  name: "RhymeFlow.Compare",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const { widget } = ComfyWidgets.STRING(this, WIDGET, ["STRING", { multiline: true }], app);
      widget.serialize = false; // not in the saved workflow's widgets_values
      if (widget.options) widget.options.serialize = false; // not in the queued prompt
      widget.value = PLACEHOLDER;
      if (widget.element) {
        widget.element.readOnly = true;
        widget.element.style.fontFamily = "monospace";
      }
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = output?.text;
      const widget = reportWidget(this);
      if (widget && text != null) {
        widget.value = Array.isArray(text) ? text.join("\n") : String(text);
        this.setDirtyCanvas?.(true, true);
      }
    };
  },
});
