"""Runs belong to the browser session (workspace) that made them: another session can neither list,
download, try nor delete them, and the raw file route serves no run file to anyone; ``--shared-runs``
shows one table to everybody and says so; ``--auth`` keeps everything behind a password.

Each test serves the app (``test_app.served_app``) and talks to it as two ``gradio_client`` clients,
which Gradio keeps apart as two sessions, as it does two browsers.
"""
from __future__ import annotations

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from test_app import finetune_args, served_app, tiny_csv, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_model(root / "model"), tiny_csv(root / "topics.csv")


def runs_table(client) -> list[list]:
    return client.predict("", None, api_name="/runs")[0]["data"]


def test_a_second_session_can_neither_list_nor_download_the_first_sessions_run(tiny, tmp_path):
    runs = tmp_path / "runs"
    with served_app(runs) as url:
        alice, bob = (Client(url, verbose=False, download_files=str(tmp_path / name)) for name in ("alice", "bob"))
        summary = alice.predict(*finetune_args(tiny), api_name="/finetune")[0]
        name = summary["run"]
        assert [row[0] for row in runs_table(alice)] == [name]
        assert runs_table(bob) == []
        for api_name, args in (("/download", (name,)), ("/delete", (name, "")), ("/resume", (name, ""))):
            with pytest.raises(AppError, match=f"no run named '{name}' in your workspace"):
                bob.predict(*args, api_name=api_name)
        zip_path, _ = alice.predict(name, api_name="/download")
        assert zip_path.endswith(f"{name}.zip")

        # the raw file route serves none of the run's files, to anyone
        (run_dir,) = runs.glob(f"*/{name}")
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert {"summary.json", "metrics.jsonl", "run.json", "topics.csv"} <= {p.name for p in files}
        for path in files:
            for route in (f"{url}gradio_api/file={path}", f"{url}file={path}"):
                response = httpx.get(route)
                assert response.status_code in (403, 404), (route, response.status_code)

        # a workspace is opened by its key: a named workspace shared on purpose
        alice.predict("team-blue", api_name="/open_workspace")
        assert runs_table(alice) == []  # a new workspace: alice's first run stays in her first one
        alice.predict(*finetune_args(tiny, method="head-only"), api_name="/finetune")
        bob.predict("team-blue", api_name="/open_workspace")
        assert [row[0] for row in runs_table(bob)] == ["head-only-s0"]


def test_shared_runs_show_every_run_to_everybody_and_say_so(tiny, tmp_path):
    with served_app(tmp_path / "runs", shared_runs=True) as url:
        alice, bob = (Client(url, verbose=False, download_files=str(tmp_path / name)) for name in ("alice", "bob"))
        name = alice.predict(*finetune_args(tiny), api_name="/finetune")[0]["run"]
        assert [row[0] for row in runs_table(bob)] == [name]
        assert bob.predict(name, api_name="/download")[0].endswith(f"{name}.zip")
        assert "Shared runs" in httpx.get(f"{url}config").text


def test_auth_keeps_the_app_and_its_files_behind_a_password(tmp_path):
    with served_app(tmp_path / "runs", auth=("alice", "s3cret")) as url:
        with pytest.raises(Exception):
            Client(url, verbose=False)
        assert httpx.get(f"{url}config").status_code == 401
        client = Client(url, verbose=False, auth=("alice", "s3cret"))
        assert client.predict("circulant", 8, 8, 8, 0, "Z1", "Z-1", api_name="/explore")[0]["num_params"] == 8

