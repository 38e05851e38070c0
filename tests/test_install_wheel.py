"""The README's install for members who are not developers, run as a test: the wheel is
built from this source, then installed as the README says (``pipx install`` or ``uv tool
install``, each into a throwaway place of its own), and the installed ``hearth`` runs the
demo. This is what catches a wheel that leaves something out (a package, the store's
migrations) while the editable install the other tests use has every file at hand.

The commands are read from the README's install block, not copied, so a change there
without a change here fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hearth import __version__

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
WHEEL = f"hearth-{__version__}-py3-none-any.whl"


def install_commands() -> list[list[str]]:
    """The install commands of the README block that installs the wheel: the line's own
    command and the one its comment offers instead (``# or: uv tool install …``)."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL) if "pipx" in b)
    line = next(line for line in block.splitlines() if line.startswith("pipx install"))
    shown, _, alternative = line.partition("# or:")
    return [shlex.split(shown), shlex.split(alternative)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as the README says (``pip wheel --no-deps .``)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), "."],
        cwd=ROOT,
        check=True,
        timeout=240,
    )
    built = out / WHEEL
    assert built.exists(), f"pip wheel made {[p.name for p in out.iterdir()]}, not {WHEEL}"
    return built


def test_the_wheel_carries_the_apps_styles(wheel: Path) -> None:
    # Textual reads each screen's .tcss from beside its module: one left out of the wheel
    # is an app that stops at its first screen, which the demo run below never opens.
    styles = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tui").rglob("*.tcss")}
    assert "tui/app.tcss" in styles
    with zipfile.ZipFile(wheel) as built:
        assert styles <= set(built.namelist())


def test_the_readme_names_the_wheel_that_is_built() -> None:
    shown = install_commands()
    assert [command[:2] for command in shown] == [["pipx", "install"], ["uv", "tool"]]
    assert all(command[-1] == f"./{WHEEL}" for command in shown), shown


def install(tool: str, wheel: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Runs the README's install command of ``tool`` where the wheel is; gives the folder
    the tool puts ``hearth`` in and the environment to run it with."""
    command = next(c for c in install_commands() if c[0] == tool)
    env = {
        **os.environ,
        # Each tool keeps to the test's folder, never the machine's own.
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
        "UV_TOOL_DIR": str(tmp_path / "uv-tools"),
        "UV_TOOL_BIN_DIR": str(tmp_path / "bin"),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "HOME": str(tmp_path / "home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("VIRTUAL_ENV", None)
    (tmp_path / "home").mkdir()
    subprocess.run(command, cwd=wheel.parent, env=env, check=True, timeout=240)
    return tmp_path / "bin", env


def run(*command: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs an installed command from the member's home, away from this checkout."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=env["HOME"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


UPGRADE = {"pipx": ["pipx", "upgrade", "hearth"], "uv": ["uv", "tool", "upgrade", "hearth"]}
UNINSTALL = {"pipx": ["pipx", "uninstall", "hearth"], "uv": ["uv", "tool", "uninstall", "hearth"]}


@pytest.mark.parametrize("tool", ["pipx", "uv"])
def test_installed_from_the_wheel_hearth_runs_and_uninstalls(
    tool: str, wheel: Path, tmp_path: Path
) -> None:
    bin_dir, env = install(tool, wheel, tmp_path)
    hearth = bin_dir / "hearth"
    assert run(hearth, "--version", env=env).stdout.strip() == f"hearth {__version__}"
    assert run(bin_dir / "hearth-relay", "--version", env=env).returncode == 0

    demo = run(hearth, "demo", "--headless", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "is lent to Cleo and Ben at the same time" in demo.stdout
    # Installed from the wheel, not reached through this checkout.
    python = hearth.resolve().parent / "python"
    where = run(python, "-c", "import hearth; print(hearth.__file__)", env=env)
    assert ROOT not in Path(where.stdout.strip()).parents, where.stdout

    # Uninstalling removes the program, not the member's data (the README says so).
    home = tmp_path / "ada"
    assert run(hearth, "--home", home, "init", "--name", "Ada", env=env).returncode == 0
    upgraded = run(*UPGRADE[tool], env=env)  # the README's upgrade: from the same wheel
    assert upgraded.returncode == 0, upgraded.stderr
    assert run(hearth, "--version", env=env).stdout.strip() == f"hearth {__version__}"
    assert run(*UNINSTALL[tool], env=env).returncode == 0
    assert not hearth.exists()
    assert (home / "hearth.db").exists()
