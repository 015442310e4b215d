"""A Flower Grid that delivers each message to a ClientApp in this process (tests only).

Flower's simulation engine starts Ray (10-20 s); the fast tests exercise the same
ClientApp and ServerApp through this grid instead: messages are handled one after
another by ``client_app(message, context)``, with a Context per node as Flower builds it.
A handler's exception becomes an error reply, as on a SuperNode. ``silent`` maps a node's
index to the training round in which it does not reply (a site that times out).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class LocalGrid(Grid):
    def __init__(
        self, client_app: Any, n_nodes: int, *, silent: dict[int, int] | None = None
    ) -> None:
        self.client_app = client_app
        # Message() reads the sender's identity from here, as Flower's runtime sets it.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.node_ids = [1000 + i for i in range(n_nodes)]
        self.contexts = {
            nid: Context(
                run_id=1,
                node_id=nid,
                node_config={"partition-id": i, "num-partitions": n_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i, nid in enumerate(self.node_ids)
        }
        self.silent = {self.node_ids[i]: rnd for i, rnd in (silent or {}).items()}
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:  # pragma: no cover - not used
        pass

    @property
    def run(self) -> Run:  # pragma: no cover - not used
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.sent.append(msg)
            ids.append(msg.metadata.message_id)
            nid = msg.metadata.dst_node_id
            if self._silenced(msg, nid):
                continue
            try:
                reply = self.client_app(msg, self.contexts[nid])
            except Exception as exc:  # noqa: BLE001 - becomes an error reply, as in Flower
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self._replies[msg.metadata.message_id] = reply
        return ids

    def _silenced(self, msg: Message, nid: int) -> bool:
        if nid not in self.silent or msg.metadata.message_type != "train":
            return False
        return int(msg.content["config"]["server-round"]) == self.silent[nid]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        return self.pull_messages(self.push_messages(messages))
