"""The presenter's script: it parses, its pure helpers pass their Node tests, and the page's head carries it with
its configuration. Node is on every machine here; without it these tests skip, except in CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from playground import presenter
from playground.registry import TABS

NODE = shutil.which("node")
HERE = Path(__file__).resolve().parent
needs_node = pytest.mark.skipif(NODE is None and not os.environ.get("CI"), reason="Node.js is not installed")


@needs_node
def test_the_script_parses():
    subprocess.run([NODE or "node", "--check", str(presenter.SCRIPT)], check=True, capture_output=True, text=True)


@needs_node
def test_the_scripts_helpers():
    run = subprocess.run([NODE or "node", "--test", str(HERE / "presenter.test.js")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout and "# pass 5" in run.stdout


@needs_node
def test_the_room_scripts_helpers():
    script = presenter.SCRIPT.parent / "room.js"
    subprocess.run([NODE or "node", "--check", str(script)], check=True, capture_output=True, text=True)
    run = subprocess.run([NODE or "node", "--test", str(HERE / "room.test.js")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout and "# pass 5" in run.stdout


def test_the_head_holds_one_configuration_and_the_scripts():
    head = presenter.head(TABS)
    assert head.count("<script>") == 3 and head.count("</script>") == 3  # the configuration, presenter.js, room.js
    assert (presenter.SCRIPT.parent / "room.js").read_text().strip() in head
    settings = json.loads(head.split("window.PLAYGROUND_CONFIG = ")[1].split(";</script>")[0])
    assert set(settings) == {"figures", "keys", "links", "labels", "clicks", "slide"}
    assert settings["clicks"] == {"routes-graph": "routes-picked"}
    assert settings["slide"] == list(presenter.SLIDE_SIZE)
    assert set(settings["figures"]) == {tab.id for tab in TABS}


def test_the_script_knows_no_tab():
    """Tab knowledge (element ids, parameters) comes from the configuration, never from the script itself."""
    script = presenter.SCRIPT.read_text()
    for tab in TABS:
        for name in (tab.figure, *(k.target for k in tab.keys), *(l.target for l in tab.links)):
            assert name not in script, f"presenter.js names {name!r} of the {tab.id} tab"
        assert f'"{tab.id}"' not in script
