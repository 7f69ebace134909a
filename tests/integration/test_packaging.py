"""The package builds as a wheel that installs into a clean venv and runs."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from exporter import __version__
from tests.support import ROOT


def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    wheels = list(dist.glob("wa_exporter-*.whl"))
    assert [w.name.split("-")[1] for w in wheels] == [__version__]
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "exporter/cli.py" in names and "exporter/sources/database/mysql.py" in names
    assert not [n for n in names if n.startswith(("tests/", "demo/", "bench/"))]
    # /runbooks serves them from the package: the link's target, not the link.
    shipped = zipfile.ZipFile(wheels[0]).read("exporter/runbooks.md").decode()
    assert shipped == (ROOT / "docs" / "runbooks.md").read_text()

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheels[0])], check=True,
                   capture_output=True, timeout=600)
    version = subprocess.run([str(env_dir / "bin" / "wa-exporter"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"wa-exporter {__version__} ")
    module = subprocess.run([str(python), "-m", "exporter", "check-config"],
                            env={"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path)},
                            capture_output=True, text=True, cwd=tmp_path)
    assert module.returncode == 0 and "WA_DB_ENGINE: SQLITE" in module.stdout
    runbooks = subprocess.run(
        [str(python), "-c", "from exporter.runbooks import page; status, _, body = "
         "page('/runbooks'); print(status, b'id=\"whatsappdatabasedown\"' in body)"],
        capture_output=True, text=True, cwd=tmp_path)
    assert runbooks.stdout.split() == ["200", "True"], runbooks.stderr
