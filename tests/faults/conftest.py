"""The fault suite: every scenario is marked ``faults`` (``pytest -m faults`` runs only these,
``-m "not faults"`` everything else) and gets a broker of its own, since some freeze it.

At the end of a run the terminal summary prints one line per scenario (what the README's
"What the fault suite proves" table is made of).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

from router.broker.embedded import EmbeddedBroker
from router.config import KafkaSettings
from tests.faults.harness import RESULTS

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("what the fault suite proves")
        for result in RESULTS:
            terminalreporter.write_line(result.line())


@pytest.fixture
def fault_broker() -> Iterator[EmbeddedBroker]:
    """A broker for this scenario alone (started here, in the main thread: it dies with us)."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def fault_kafka(fault_broker: EmbeddedBroker) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=fault_broker.bootstrap_servers,
        topic_prefix=f"f{uuid.uuid4().hex[:6]}.",
        partitions=4,
        client_id=f"faults-{uuid.uuid4().hex[:6]}",
    )
