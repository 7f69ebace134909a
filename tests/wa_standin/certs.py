"""Self-signed certificates for the stand-in's HTTPS, made with the ``openssl`` CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_self_signed_cert(directory: str | Path, common_name: str = "localhost",
                          ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (EC P-256, valid for localhost and ``ip``)."""
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={common_name}",
         "-addext", f"subjectAltName=DNS:{common_name},IP:{ip}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key
