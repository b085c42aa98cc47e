"""Who gets the `champion` alias when pushes race (components/registry_pusher.py `claim_champion`):
a version is made champion only after beating the version it replaces, on its own test split,
under the embedded registry's file lock, or by compare-and-set on a registry without one. A temp
SQLite MLflow registry; the models are stand-ins (the measuring is stubbed)."""

import threading
import time
from typing import Dict, List, Optional

import pytest

from speechpipe.components.registry_pusher import claim_champion
from speechpipe.results.registry import Registry

NAME = "speechpipe-embedder"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    # One database for the module: MLflow's schema migrations take seconds per new database.
    return f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow/mlflow.db"


@pytest.fixture
def registry(tracking_uri, request) -> Registry:
    registry = Registry(tracking_uri)
    registry.name = f"{NAME}-{request.node.name}"[:200]  # one registered model per test
    return registry


def _register(registry: Registry, tmp_path, data_key: str, eer: float, model_uri: str = "") -> str:
    folder = tmp_path / f"model-{data_key}-{eer}"
    folder.mkdir()
    (folder / "MLmodel").write_text("stand-in\n")
    tags = {"data_key": data_key, "smoke_test": "passed", "model_uri": model_uri or str(folder)}
    return registry.register(registry.name, str(folder), {"test_eer": eer}, tags).version


class Measured:
    """measure(version): a fixed EER per version, and which versions were asked for."""

    def __init__(self, eers: Dict[str, float]) -> None:
        self.eers, self.asked = eers, []  # type: ignore[var-annotated]

    def __call__(self, version: str) -> Dict[str, float]:
        self.asked.append(version)
        return {"eer": self.eers[version]}


def _claim(registry, version, compared, eer, measure, data_key="new", margin=0.0, **kwargs):
    return claim_champion(registry, registry.name, version, data_key, compared, "eer", eer, margin, measure, **kwargs)


def test_no_champion_the_version_becomes_champion(registry, tmp_path):
    v1 = _register(registry, tmp_path, "a", 0.3)
    measure = Measured({})
    claim = _claim(registry, v1, None, 0.3, measure)
    assert claim["champion"] and claim["why"] == "no champion to beat" and claim["compared_with"] is None
    assert registry.champion(registry.name) == v1 and measure.asked == []
    assert claim["lock"] and claim["lock"].endswith("champion.lock")


def test_the_champion_the_evaluator_compared_with_needs_no_measuring(registry, tmp_path):
    v1 = _register(registry, tmp_path, "a", 0.3)
    registry.set_champion(registry.name, v1)
    v2 = _register(registry, tmp_path, "b", 0.2)
    measure = Measured({})
    # A registry champion is named by its version.
    claim = _claim(registry, v2, {"registry_version": v1, "eer": 0.3}, 0.2, measure, data_key="b")
    assert claim["champion"] and claim["compared_with"] == v1 == claim["replaced"] and measure.asked == []
    # An ML Metadata champion by its model's URI, which its version carries.
    v3 = _register(registry, tmp_path, "c", 0.1)
    compared = {"model_id": 7, "uri": str(tmp_path / "model-b-0.2"), "eer": 0.2}
    claim = _claim(registry, v3, compared, 0.1, measure, data_key="c")
    assert claim["champion"] and claim["compared_with"] == v2 and measure.asked == []
    assert registry.champion(registry.name) == v3


def test_a_champion_made_meanwhile_is_measured_on_this_runs_split_and_must_be_beaten(registry, tmp_path):
    # Both runs evaluated against no champion; the other run's v1 was made champion first.
    v1 = _register(registry, tmp_path, "a", 0.30)
    registry.set_champion(registry.name, v1)
    v2 = _register(registry, tmp_path, "b", 0.25)
    measure = Measured({v1: 0.20})  # v1 on THIS run's test split: better than the candidate
    claim = _claim(registry, v2, None, 0.25, measure, data_key="b")
    assert not claim["champion"] and measure.asked == [v1]
    assert claim["compared_with"] == v1 and claim["champion_metrics"] == {"eer": 0.20}
    assert f"the champion changed to v{v1} while this run evaluated" in claim["why"]
    assert "does not beat the champion's 0.2000" in claim["why"]
    assert registry.champion(registry.name) == v1
    # The margin applies as the evaluator's did.
    measure = Measured({v1: 0.26})
    claim = _claim(registry, v2, None, 0.25, measure, data_key="b", margin=0.05)
    assert not claim["champion"] and "by more than 0.0500" in claim["why"]
    # Better than v1 on this split: champion, and the record says what it beat.
    claim = _claim(registry, v2, None, 0.25, Measured({v1: 0.40}), data_key="b")
    assert claim["champion"] and claim["compared_with"] == v1 == claim["replaced"]
    assert f"beats v{v1}'s 0.4000 on this run's test split" in claim["why"]
    assert registry.champion(registry.name) == v2


def test_a_champion_that_cannot_be_measured_is_not_replaced(registry, tmp_path):
    v1 = _register(registry, tmp_path, "a", 0.3)
    registry.set_champion(registry.name, v1)
    v2 = _register(registry, tmp_path, "b", 0.1)

    def broken(version: str) -> Dict[str, float]:
        raise OSError("test split gone")

    claim = _claim(registry, v2, None, 0.1, broken, data_key="b")
    assert not claim["champion"] and "test split gone" in claim["why"]
    assert registry.champion(registry.name) == v1


def test_the_data_key_rule_of_the_champion_steps_is_kept(registry, tmp_path):
    # v2 was trained on this run's data (key "a"): its champion is v1, the predecessor on other data,
    # which the evaluator compared with; the alias moves from v2 without measuring it.
    v1 = _register(registry, tmp_path, "z", 0.4)
    v2 = _register(registry, tmp_path, "a", 0.3)
    registry.set_champion(registry.name, v2)
    v3 = _register(registry, tmp_path, "a", 0.2)
    claim = _claim(registry, v3, {"registry_version": v1, "eer": 0.4}, 0.2, Measured({}), data_key="a")
    assert claim["champion"] and claim["compared_with"] == v1 and claim["replaced"] == v2


def test_the_lock_serialises_claims(registry, tmp_path):
    v1 = _register(registry, tmp_path, "a", 0.3)
    done: List[dict] = []
    with registry.champion_lock():
        worker = threading.Thread(target=lambda: done.append(_claim(registry, v1, None, 0.3, Measured({}))))
        worker.start()
        time.sleep(1.0)
        assert not done and registry.champion(registry.name) is None  # waits for the lock
    worker.join(30)
    assert done and done[0]["champion"] and registry.champion(registry.name) == v1


def test_racing_claims_end_with_a_champion_that_beat_the_one_it_replaced(registry, tmp_path):
    """Four runs that all evaluated against no champion claim at once, each from its own thread
    (flock locks open files, so threads contend as processes do)."""
    eers = {}
    for i, eer in enumerate((0.30, 0.10, 0.25, 0.20)):
        eers[_register(registry, tmp_path, f"k{i}", eer)] = eer
    results: Dict[str, dict] = {}

    def claim(version: str) -> None:
        # On every run's split a model measures as it did on its own: the ranking is the EERs'.
        results[version] = _claim(registry, version, None, eers[version], Measured(eers), data_key=f"d{version}")

    threads = [threading.Thread(target=claim, args=(v,)) for v in eers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    holder = registry.champion(registry.name)
    assert holder == min(eers, key=eers.get)  # the best one, whatever the order
    chain = [r for r in results.values() if r["champion"]]
    for made in chain:  # every move was decided against the version it displaced
        assert made["compared_with"] == made["replaced"]
    assert results[holder]["champion"]


class NoLockRegistry:
    """A registry without a lock (a tracking server) on which another pusher moves the alias
    between this pusher's read and its set, once."""

    def __init__(self, registry: Registry, intruder: str) -> None:
        self._registry, self._intruder = registry, intruder
        self.name, self.client, self.lock_path = registry.name, registry.client, None

    def champion_lock(self):
        import contextlib

        return contextlib.nullcontext(None)

    def champion(self, name: str) -> Optional[str]:
        return self._registry.champion(name)

    def move_champion(self, name: str, version: str, expected: Optional[str]) -> Optional[str]:
        if self._intruder:
            self._registry.set_champion(name, self._intruder)
            self._intruder = ""
        return self._registry.move_champion(name, version, expected)


def test_without_a_lock_a_moved_alias_is_decided_again(registry, tmp_path):
    v1 = _register(registry, tmp_path, "a", 0.3)
    v2 = _register(registry, tmp_path, "b", 0.2)
    stub = NoLockRegistry(registry, intruder=v1)
    measure = Measured({v1: 0.1})  # the intruder is better on this split
    claim = _claim(stub, v2, None, 0.2, measure, data_key="b")
    assert measure.asked == [v1] and not claim["champion"] and claim["lock"] is None
    assert registry.champion(registry.name) == v1
