// Resolves the execution kind: the caller's explicit task.kind when given, otherwise the first rule
// whose task-type prefix matches, otherwise the configured fallback.
import { ExecutionKind } from "../gen/envelope/v1/execution_envelope_pb.js";
import type { Task } from "../gen/envelope/v1/runtime_request_pb.js";

/** A task type matches a prefix when it equals it or continues it with a dot ("serving.deploy_model.v2"). */
export interface KindRule {
  readonly taskTypePrefix: string;
  readonly kind: ExecutionKind;
}

/** The kind names of the contract ("deploy_model", ...), as task.kind and configuration spell them. */
export const executionKindNames: Readonly<Record<string, ExecutionKind>> = Object.freeze({
  deploy_model: ExecutionKind.DEPLOY_MODEL,
  inference: ExecutionKind.INFERENCE,
  evaluation: ExecutionKind.EVALUATION,
  data_movement: ExecutionKind.DATA_MOVEMENT,
  agent_workflow: ExecutionKind.AGENT_WORKFLOW,
  tool_invocation: ExecutionKind.TOOL_INVOCATION,
});

export const defaultKindRules: readonly KindRule[] = Object.freeze(
  (
    [
      ["serving.deploy_model", "deploy_model"],
      ["deploy_model", "deploy_model"],
      ["serving.inference", "inference"],
      ["inference", "inference"],
      ["evaluation", "evaluation"],
      ["eval", "evaluation"],
      ["data_movement", "data_movement"],
      ["data", "data_movement"],
      ["tool", "tool_invocation"],
      ["agent", "agent_workflow"],
    ] as const
  ).map(([taskTypePrefix, name]) => Object.freeze({ taskTypePrefix, kind: executionKindNames[name] as ExecutionKind })),
);

/**
 * A task type no rule matches is taken as an agent workflow: the broadest kind, so policies written
 * for agents (the least constrained executions) apply rather than none.
 */
export const defaultFallbackKind = ExecutionKind.AGENT_WORKFLOW;

export function resolveKind(task: Task, rules: readonly KindRule[], fallback: ExecutionKind): ExecutionKind {
  if (task.kind !== "") return executionKindNames[task.kind] ?? fallback;
  for (const rule of rules) {
    const p = rule.taskTypePrefix;
    if (task.type === p || (task.type.startsWith(p) && task.type.charCodeAt(p.length) === 46) /* . */) {
      return rule.kind;
    }
  }
  return fallback;
}

const namesByKind: ReadonlyMap<ExecutionKind, string> = new Map(
  Object.entries(executionKindNames).map(([name, kind]) => [kind, name]),
);

/** The contract's name of a kind ("deploy_model"): how policy rules see it. */
export function kindName(kind: ExecutionKind): string {
  return namesByKind.get(kind) ?? "unspecified";
}
