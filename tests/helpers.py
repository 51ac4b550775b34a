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
