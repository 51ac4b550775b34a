from nodegraph import Workflow


def link(source: str, output: str) -> dict:
    return {"from": source, "output": output}


def wf(nodes: dict) -> Workflow:
    return Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "t", "nodes": nodes})


class EventLog(list):
    def __call__(self, event):
        self.append(event)

    def nodes(self, kind: str) -> list[str]:
        return [e.node for e in self if e.kind == kind]


def shipped_problems(workflow, registry) -> list:
    """Validation problems of a shipped workflow, except the one it ships with on purpose: a workflow for
    the user's own model (node `model` of a model-folder loader) leaves `model.path` for them to set."""
    from nodegraph import validate

    problems = validate(workflow, registry)
    model = workflow.nodes.get("model")
    if model is not None and model.type.startswith("core/load_") and "path" not in model.inputs:
        problems = [p for p in problems if (p.kind, p.node, p.input) != ("missing_input", "model", "path")]
    return problems
