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
    """Validation problems of a shipped workflow, except those it ships with on purpose: a workflow for
    the user's own files (their model folder, their LoRA) leaves those required path inputs unset."""
    from nodegraph import validate

    def users_file(problem) -> bool:
        if problem.kind != "missing_input" or problem.node not in workflow.nodes:
            return False
        node_type = registry.nodes.get(workflow.nodes[problem.node].type)
        spec = node_type.inputs.get(problem.input) if node_type else None
        return spec is not None and spec.access is not None and spec.access.mode == "read"

    return [p for p in validate(workflow, registry) if not users_file(p)]
