// RhymeFlow frontend extension: gives the pack's nodes one colour so a RhymeFlow chain is easy to spot.
// (The live schedule view builds on this file.)
import { app } from "../../scripts/app.js";

const RHYMEFLOW_COLOR = "#2a4858";
const RHYMEFLOW_BGCOLOR = "#3d6a80";

app.registerExtension({
  name: "rhymeflow.appearance",
  nodeCreated(node) {
    if (node.comfyClass && node.comfyClass.startsWith("RhymeFlow")) {
      node.color = node.color || RHYMEFLOW_COLOR;
      node.bgcolor = node.bgcolor || RHYMEFLOW_BGCOLOR;
    }
  },
});
