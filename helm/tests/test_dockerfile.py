"""The Dockerfile, checked statically (no Docker engine runs in CI): a multi-stage build whose
runtime stage is small, has no build tools and runs as a numeric non-root user."""

from __future__ import annotations

import re

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|cargo|rustc|rustup|build-essential|apt-get|apk|pip)\b")


def stages() -> list[dict]:
    """[{base, name, lines}] in order; continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            out.append({"base": m.group(1), "name": m.group(2), "lines": []})
        elif out:
            out[-1]["lines"].append(line)
    return out


def test_the_image_is_built_in_several_stages_with_a_locked_release_build() -> None:
    s = stages()
    assert len(s) >= 2
    build = next(st for st in s if any("cargo build" in line for line in st["lines"]))
    (cmd,) = [line for line in build["lines"] if "cargo build" in line]
    assert "--release" in cmd and "--locked" in cmd and "-p trellis" in cmd


def test_the_runtime_stage_has_no_build_tools() -> None:
    final = stages()[-1]
    assert final["name"] == "runtime"
    assert not re.search(r"rust|gcc|buildpack|golang", final["base"]), final["base"]
    assert "distroless" in final["base"] or "slim" in final["base"]
    for line in final["lines"]:
        if line.upper().startswith("RUN"):
            assert not BUILD_TOOLS.search(line), line
    copies = [line for line in final["lines"] if line.upper().startswith("COPY")]
    assert copies and all("--from=" in line for line in copies), "the runtime stage copies only build outputs"


def test_the_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    final = stages()[-1]
    users = [line.split(None, 1)[1] for line in final["lines"] if line.upper().startswith("USER")]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    entry = [line for line in final["lines"] if line.upper().startswith("ENTRYPOINT")]
    assert entry and "trellis" in entry[-1]


def test_the_build_context_leaves_out_target_and_git() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"target", ".git", ".trellis"} <= ignored
