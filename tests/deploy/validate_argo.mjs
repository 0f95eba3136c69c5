// Validate Argo Rollouts objects with @kubernetes-models/argo-rollouts (JSON schema of each kind).
// Usage: node validate_argo.mjs objects.json  -> prints [{name, kind, ok, error}] as JSON.
import { readFileSync } from "node:fs";
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";

const models = { Rollout, AnalysisTemplate };
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = objects.map((obj) => {
  const Model = models[obj.kind];
  const name = `${obj.kind}/${obj.metadata?.name}`;
  if (!Model) return { name, kind: obj.kind, ok: false, error: `no model for kind ${obj.kind}` };
  try {
    new Model(obj).validate();
    return { name, kind: obj.kind, ok: true, error: null };
  } catch (err) {
    return { name, kind: obj.kind, ok: false, error: String(err?.message ?? err) };
  }
});
console.log(JSON.stringify(results));
