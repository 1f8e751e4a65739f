"""The privacy API's answers, and a deletion that keeps failing: attempts are bounded and the
regulation says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.config import DeletionSettings, KafkaSettings, PrivacySettings
from router.privacy.worker import RegulationWorker
from tests.fakes.amplitude import FakeAmplitude
from tests.ops.helpers import TOKEN, eventually, running_console, unique_kafka, workspace


def amplitude(fake: FakeAmplitude, **settings: Any) -> dict[str, Any]:
    return {
        "id": "amp",
        "name": "Amplitude",
        "type": "amplitude",
        "sources": ["web"],
        "settings": {"api_key": fake.api_key, "api_host": fake.base_url, **settings},
        "delivery": {"timeout": "2s"},
    }


async def test_the_privacy_api(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    async with FakeAmplitude() as fake:
        ws = workspace(kafka, tmp_path / "state", [amplitude(fake)])
        async with running_console(ws, tmp_path / "console.sqlite") as (_console, api):
            path = "/api/v1/privacy/regulations"
            headers = {"Authorization": f"Bearer {TOKEN}"}
            for body, code in [
                ({"regulationType": "FORGET", "subjectIds": ["u"]}, "invalid_regulation_type"),
                ({"regulationType": "SUPPRESS", "subjectIds": []}, "invalid_subject_ids"),
                ({"regulationType": "SUPPRESS", "subjectIds": [7]}, "invalid_subject_ids"),
                (
                    {"regulationType": "SUPPRESS", "subjectType": "EMAIL", "subjectIds": ["u"]},
                    "invalid_subject_type",
                ),
                ({"regulationType": "SUPPRESS", "subjectIds": [" "]}, "invalid_regulation"),
                ([], "invalid_body"),
            ]:
                status, answer = await api.call("POST", path, json=body, headers=headers)
                assert (status, answer["code"]) == (400, code), body
            status, answer = await api.call("POST", path, json={"regulationType": "SUPPRESS"})
            assert status == 401  # the admin token, as everywhere under /api/

            created = await api.post(
                path, {"regulationType": "SUPPRESS", "subjectIds": ["u1", "u2"], "reason": "asked"}
            )
            assert [r["userId"] for r in created["regulations"]] == ["u1", "u2"]
            assert {r["status"] for r in created["regulations"]} == {"finished"}
            found = await api.get("/api/v1/privacy/suppressions")
            assert sorted(s["userId"] for s in found["suppressions"]) == ["u1", "u2"]

            await api.post(path, {"regulationType": "UNSUPPRESS", "subjectIds": ["u1"]})
            found = await api.get("/api/v1/privacy/suppressions")
            assert [s["userId"] for s in found["suppressions"]] == ["u2"]
            mine = await api.get(path, userId="u1")
            assert [r["type"] for r in mine["regulations"]] == ["UNSUPPRESS", "SUPPRESS"]
            one = await api.get(f"{path}/{created['regulations'][1]['id']}")
            assert one["userId"] == "u2" and one["reason"] == "asked"
            status, answer = await api.call("GET", f"{path}/reg-nope", headers=headers)
            assert (status, answer["code"]) == (404, "unknown_regulation")


async def test_a_deletion_that_keeps_failing_stops_after_its_attempts(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    async with FakeAmplitude() as fake:
        fake.deletion_failures = [503] * 10
        ws = workspace(
            kafka,
            tmp_path / "state",
            [
                amplitude(fake, secret_key=fake.secret_key, privacy_host=fake.base_url),
                {**amplitude(fake), "id": "amp-nokey", "name": "Amplitude 2"},
            ],
        )
        deletion = DeletionSettings(delay=0, max_attempts=2, backoff_min=0.1, backoff_max=0.2)
        ws = ws.model_copy(update={"privacy": PrivacySettings(deletion=deletion)})
        async with (
            running_console(ws, tmp_path / "console.sqlite") as (_console, api),
            RegulationWorker(ws),
        ):
            created = await api.post(
                "/api/v1/privacy/regulations",
                {"regulationType": "SUPPRESS_WITH_DELETE", "subjectIds": ["user-1"]},
            )
            regulation_id = created["regulations"][0]["id"]

            async def settled() -> Any:
                found = await api.get(f"/api/v1/privacy/regulations/{regulation_id}")
                return found["status"] != "running" and found

            found = await eventually(settled, timeout=30)
        assert found["status"] == "failed"
        amp = found["destinations"]["amp"]
        assert (amp["status"], amp["attempts"], amp["maxAttempts"]) == ("failed", 2, 2)
        assert (amp["retrying"], amp["nextAttemptAt"], amp["reason"]) == (False, None, "http_503")
        assert fake.secret_key not in str(found) and fake.api_key not in str(found)
        nokey = found["destinations"]["amp-nokey"]
        assert nokey["status"] == "not_supported"
        assert "settings.secret_key" in nokey["reason"]
        assert len([c for c in fake.calls if c.path == "/api/2/deletions/users"]) == 2
