"""The backend side of the partition test, run inside the backend's own network namespace.

Not a test module: test_reliability_partitions.py starts it with ``ip netns exec`` and talks to it over
stdin/stdout, one JSON object per line, so that every packet to the learners leaves from inside the
namespaces the test made (never from the host's). Commands:

- ``{"do": "ready"}``: wait until every learner is SERVING, then set each up with TOY and equal weights;
- ``{"do": "round", "round": r, "watch": i}``: resync and play round r; when learner ``i`` starts to receive
  the proposal, print ``{"event": "testing"}`` first, so that the test can cut its link mid-round;
- ``{"do": "reach", "learner": i}``: wait until learner i answers again (after a heal);
- ``{"do": "digests"}``: every learner's weights digest (or its error).
"""

from __future__ import annotations

import json
import sys
import time

from backend_client import Deadlines, LearnerClient, set_equal_weights
from backend_client.local_fleet import wait_until_serving
from backend_client.resync import FleetWeights, resynced_round
from colearn_contract.mli import ProposedWeights, Weights

DEADLINES = Deadlines(connect=30, query=2.0, setup=60, propose=30, test=4.0, transfer=10)
PARAMETERS = json.dumps({"weights_mb": 0.01, "eval_seconds": 1.5})


def say(message: dict) -> None:
    print(json.dumps(message), flush=True)


class Watched(LearnerClient):
    """A client that announces when it starts to send a proposal for a vote."""

    watching = False

    def mli_test_weights(self, weights: Weights) -> ProposedWeights:
        if self.watching:
            say({"event": "testing", "learner": self.name})
        return super().mli_test_weights(weights)


def reach(client: LearnerClient, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.get_status()
            return {"ok": True}
        except Exception as exc:
            if time.monotonic() > deadline:
                return {"ok": False, "error": str(exc)}
            time.sleep(0.2)


def main(addresses: list[str]) -> None:
    clients = [Watched(str(i), a, deadlines=DEADLINES) for i, a in enumerate(addresses)]

    def setup(i: int) -> str:
        return clients[i].setup_ml("TOY", "{}", "TOY", PARAMETERS)

    fleet = FleetWeights(setup=setup)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "ready":
            for address in addresses:
                wait_until_serving(address, timeout=90)
            for i, client in enumerate(clients):
                client.start()
                setup(i)
            set_equal_weights(clients)
            say({"ok": True})
        elif command["do"] == "round":
            for i, client in enumerate(clients):
                client.watching = i == command.get("watch")
            result = resynced_round(fleet, clients, 0.5, command["round"])
            say({"result": result.to_dict()})
        elif command["do"] == "reach":
            say(reach(clients[command["learner"]]))
        elif command["do"] == "digests":
            digests = []
            for client in clients:
                try:
                    digests.append(client.get_status().weights_sha256)
                except Exception as exc:
                    digests.append(f"error: {exc}")
            say({"digests": digests})
        else:
            say({"error": f"unknown command {command['do']!r}"})


if __name__ == "__main__":
    main(sys.argv[1:])
