"""The playground as a package and from Python: pyproject.toml agrees with requirements.txt, `pip install .` gives
the command and the notebook API, the example notebook runs top to bottom, and the API raises the app's errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ..conftest import ROOT


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_pyproject_lists_exactly_the_runtime_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["dependencies"] == _requirements()
    assert project["scripts"] == {"transformer-playground": "playground.server:main"}
    assert not any(re.match(r"(transformers|pytest|playwright|llama)", d) for d in project["dependencies"])


def test_pip_install_gives_the_command_and_the_notebook_api(tmp_path):
    """`pip install --no-deps .` into a fresh venv that borrows this environment's packages (fast, offline), then
    the command and the API from another folder, so the installed copy is the one used."""
    source = tmp_path / "source"
    for folder in ("model", "playground"):  # a copy: building writes build/ and *.egg-info beside the source
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        check=True, capture_output=True, text=True).stdout.strip())
    (site_packages / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-build-isolation", "--no-index", "--quiet", str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_text = subprocess.run([str(venv / "bin" / "transformer-playground"), "--help"], cwd=elsewhere, env=env,
                               capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "--model" in help_text.stdout and "--trace-memory-mb" in help_text.stdout
    script = ("import playground as pg; t = pg.analyze('hi'); print(pg.__file__); print(t); "
              "print(t.attention(0, 0).figure.layout.title.text)")
    used = subprocess.run([str(python), "-c", script],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert used.returncode == 0, used.stderr[-2000:]
    where, analysis, title = used.stdout.strip().splitlines()[-3:]
    assert where.startswith(str(site_packages)) and "tokens on smollm2" in analysis and "layer 0, head 0" in title


def test_the_example_notebook_runs_top_to_bottom(real):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "examples" / "playground.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 7  # every view shows its figure inline
    assert any("attends to the previous token" in o.get("text", "") for o in outputs)


@pytest.fixture(scope="module")
def analysis(runner):
    from playground.notebook import Analysis

    return Analysis(runner, runner.analyze("The capital of France is", lens=False))


def test_the_notebook_views_are_the_tabs_own(analysis, runner):
    """The notebook draws through the tabs' named views, and what they draw is the model's own: the heatmap's
    cells are hook_pattern (causal cells masked), the graph's top node is the last position."""
    from playground import tab_attention, views

    view = analysis.attention(3, 5)
    assert view.figure.to_json() == tab_attention.render_head(runner, analysis.trace, 3, 5, False)[0].to_json()
    pattern = analysis.cache["blocks.3.attn.hook_pattern"]
    assert tuple(pattern.shape) == (1, runner.cfg.n_heads, 5, 5)
    z = np.array(view.figure.data[0].z, dtype=float)
    below = np.tril(np.ones((5, 5), bool))
    np.testing.assert_allclose(z[below], pattern[0, 5].numpy()[below], atol=1e-5)
    assert np.isnan(z[~below]).all()  # the future, greyed
    routes = analysis.routes(-1)
    assert routes.figure.to_json() == views.show("routes", "graph", runner, analysis.trace, {"pos": 4}).figure.to_json()
    nodes = next(d for d in routes.figure.data if d.name == "residual state")
    assert json.dumps({"node": [2 * runner.cfg.n_layers, 4]}) in nodes.customdata


@pytest.mark.parametrize("call,message", [
    (lambda pg, t: pg.analyze(""), "Type a prompt first"),
    (lambda pg, t: pg.analyze("x" * 30_000), "the limit is 20,000"),
    (lambda pg, t: t.attention(30, 0), "layer must be in 0..29"),
    (lambda pg, t: t.attention(0, 9), "head must be in 0..8"),
    (lambda pg, t: t.lens(position=5), "position must be in"),
    (lambda pg, t: t.sampler(temp=0.5), "unknown sampler settings"),
    (lambda pg, t: t.sampler(top_p=1.5), "top_p"),
    (lambda pg, t: t.routes(threshold=0), "between 0 and 1"),
    (lambda pg, t: t.why(3, 1, query=1, key=3), "key must be in 0..1"),
    (lambda pg, t: pg.ablate(t, heads=["L99H0"]), "head layer must be in 0..29"),
    (lambda pg, t: pg.ablate(t, heads=["head 3"]), "heads must look like 'L3H2, L14H0'"),
    (lambda pg, t: pg.patch("The cat", "The cat sat", " a", " b"), "same token length"),
    (lambda pg, t: pg.patch("a b", "c d", " a", " b", kind="everything"), "kind must be one of"),
])
def test_bad_input_raises_the_apps_message(analysis, call, message):
    import playground as pg

    with pytest.raises(ValueError, match=re.escape(message)):
        call(pg, analysis)
