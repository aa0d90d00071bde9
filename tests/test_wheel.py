"""rnn-zoo as a wheel, installed outside the checkout: the recipes, the weights manifest, the
shipped weights and the bundled corpora are package data, so the commands work from any folder.

The wheel is built from a copy of the source tree (``pip wheel --no-deps``) and installed with
``--no-deps`` into a new virtual environment that sees this environment's dependencies through a
path file (a plain path: this environment's editable install of the checkout is not picked up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import zoo

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", "runs", "build", "dist", "__pycache__", ".pytest_cache", "wandb"}


def _ignore(folder: str, names: list[str]) -> list[str]:
    top = Path(folder) == ROOT  # ./data (users' corpora) and the like, not datamodules/data
    return [n for n in names if n in SKIP or (top and n in ("data", "tests"))]


def _run(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """``(bin dir, an unrelated folder to run in, environment)`` of a venv with the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_ignore)
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp / "dist", source, cwd=tmp,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("rnn_zoo-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    new_python = env_dir / "bin" / "python"
    new_site = _run(new_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp).stdout.strip()  # fmt: skip
    deps = sysconfig.get_paths()["purelib"]  # torch, Lightning, ...: as a plain path, no .pth
    Path(new_site, "rnn_zoo_test_deps.pth").write_text(deps + "\n")
    install = _run(
        sys.executable, "-m", "pip", "--python", new_python, "install", "--no-deps", "-q", wheel,
        cwd=tmp,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RNN_ZOO_", "PYTHON", "VIRTUAL"))
    }
    env |= {"RNN_ZOO_HOME": str(tmp / "cache"), "RNN_ZOO_OFFLINE": "1", "WANDB_MODE": "offline"}
    return env_dir / "bin", elsewhere, env


def test_the_package_comes_from_the_wheel(installed) -> None:
    bin_dir, elsewhere, env = installed
    where = _run(
        bin_dir / "python", "-c", "import zoo; print(zoo.__file__)", cwd=elsewhere, env=env
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent)  # not the checkout


def test_version_recipes_and_pretrained_list(installed) -> None:
    bin_dir, elsewhere, env = installed
    version = _run(bin_dir / "rnn-zoo", "--version", cwd=elsewhere, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"rnn-zoo {zoo.__version__}"
    recipes = _run(bin_dir / "rnn-zoo", "recipes", cwd=elsewhere, env=env)
    assert recipes.returncode == 0, recipes.stderr
    names = [line.split()[0] for line in recipes.stdout.splitlines()[:-2]]
    shipped = sorted(str(p.relative_to(ROOT / "recipes").with_suffix("")) for p in
                     (ROOT / "recipes").glob("*/*.yaml"))  # fmt: skip
    assert names == shipped
    listed = _run(bin_dir / "rnn-zoo", "pretrained", "list", cwd=elsewhere, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == zoo.list_pretrained()


def test_sample_from_a_shipped_model(installed) -> None:
    bin_dir, elsewhere, env = installed
    args = ["sample", "--pretrained", "char_lm-lstm-shakespeare-v1", "--prime", "ROMEO:",
            "--length", "40", "--seed", "0", "--device", "cpu"]  # fmt: skip
    out = _run(bin_dir / "rnn-zoo", *args, cwd=elsewhere, env=env)
    assert out.returncode == 0, out.stderr
    expected = zoo.load("char_lm-lstm-shakespeare-v1").generate(
        "ROMEO:", 40, temperature=0.8, seed=0
    )
    assert out.stdout == expected + "\n"


def test_fit_a_bundled_recipe_by_name(installed) -> None:
    bin_dir, elsewhere, env = installed
    args = ["fit", "--config", "char_lm/tiny", "--trainer.max_steps", "3",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    out = _run(bin_dir / "rnn-zoo", *args, cwd=elsewhere, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "`max_steps=3` reached" in out.stderr  # trained on the bundled corpus
