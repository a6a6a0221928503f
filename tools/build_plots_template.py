"""Build ``.dvc/plots_offline.html``: DVC's plots page with the vega libraries inlined.

``dvc plots show`` writes an HTML page whose line charts load vega, vega-lite and vega-embed from
a CDN, so they stay blank without internet. DVC accepts an HTML template (``plots.html_template``
in ``.dvc/config``) that must contain ``{plot_divs}``; leaving out ``{scripts}`` drops the CDN
tags. This script fetches the exact versions the installed ``dvc-render`` asks for from the npm
registry (``npm pack`` checks each tarball against the registry's integrity hash) and inlines
their minified builds, with their licences, into that template.

    python tools/build_plots_template.py      # needs npm and the project's venv (dvc-render)

``tests/test_plots_offline.py`` fails when the template no longer matches dvc-render's versions.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / ".dvc" / "plots_offline.html"
BUILDS = {
    "vega": "build/vega.min.js",
    "vega-lite": "build/vega-lite.min.js",
    "vega-embed": "build/vega-embed.min.js",
}


def wanted_versions() -> dict[str, str]:
    """The versions dvc-render's VegaRenderer loads from the CDN: {"vega": "5.20.2", ...}."""
    from dvc_render.vega import VegaRenderer

    found = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    if set(found) != set(BUILDS):
        raise SystemExit(
            f"dvc-render loads {sorted(found)}; this script knows {sorted(BUILDS)}: update BUILDS"
        )
    return found


def fetch(package: str, version: str, workdir: Path) -> tuple[str, str]:
    """(minified build, licence text) of package@version from the npm registry."""
    out = subprocess.run(
        ["npm", "pack", "--silent", f"{package}@{version}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    with tarfile.open(workdir / out) as tar:
        code = tar.extractfile(f"package/{BUILDS[package]}").read().decode()  # type: ignore[union-attr]
        licence = tar.extractfile("package/LICENSE").read().decode()  # type: ignore[union-attr]
    if "</script" in code.lower():
        raise SystemExit(f"{package}@{version}: the build contains '</script' and cannot be inlined")
    return code, licence


def render(versions: dict[str, str], parts: dict[str, tuple[str, str]]) -> str:
    scripts = []
    for package, version in versions.items():
        code, licence = parts[package]
        notice = licence.strip().replace("*/", "* /")
        scripts.append(
            f"<script>/*! {package}@{version} (npm), inlined for offline "
            f"use.\n{notice}\n*/\n{code}\n</script>"
        )
    header = " ".join(f"{p}@{v}" for p, v in versions.items())
    return (
        "<!DOCTYPE html>\n"
        f"<!-- aepipe offline plots template: {header}. Built by tools/build_plots_template.py; do not edit. "
        "-->\n"
        '<html>\n<head>\n{refresh_tag}\n<meta charset="utf-8">\n<title>aepipe plots (DVC)</title>\n'
        + "\n".join(scripts)
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )


def main() -> int:
    versions = wanted_versions()
    with tempfile.TemporaryDirectory() as tmp:
        parts = {p: fetch(p, v, Path(tmp)) for p, v in versions.items()}
    text = render(versions, parts)
    tmp_path = TEMPLATE.with_suffix(".html.tmp")
    tmp_path.write_text(text)
    tmp_path.replace(TEMPLATE)
    print(
        f"wrote {TEMPLATE.relative_to(REPO)} ({len(text) / 1e6:.2f} MB): "
        f"{', '.join(f'{p}@{v}' for p, v in versions.items())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
