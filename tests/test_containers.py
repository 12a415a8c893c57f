"""Container images can't be built here (no Docker engine): lint them and check them
against the code with a real Dockerfile parser and hadolint instead."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from robotoff_batch.job_types import load_registry
from robotoff_batch.paths import CONTAINERS_DIR

JOB_TYPES = sorted(load_registry())
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"google": "google-cloud-storage", "google_crc32c": "google-crc32c"}
STDLIB = set(sys.stdlib_module_names)


def container_dir(job_type: str) -> Path:
    return CONTAINERS_DIR / job_type


def parsed(job_type: str) -> list[dict[str, str]]:
    parser = DockerfileParser(path=str(container_dir(job_type) / "Dockerfile"))
    return parser.structure  # type: ignore[no-any-return]


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_every_job_type_has_a_container(job_type: str) -> None:
    directory = container_dir(job_type)
    for name in ("Dockerfile", "requirements.txt", "entrypoint.py"):
        assert (directory / name).is_file(), f"{directory / name} is missing"


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_hadolint_finds_nothing(job_type: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(container_dir(job_type) / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_dockerfile_shape(job_type: str) -> None:
    instructions = parsed(job_type)
    kinds = [i["instruction"] for i in instructions]
    base = next(i["value"] for i in instructions if i["instruction"] == "FROM")
    assert re.search(r":\d[\w.-]*", base) and ":latest" not in base, f"unpinned base {base}"
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image runs as root"
    copies = [i for i in instructions if i["instruction"] == "COPY"]
    sources = [c["value"].split()[0] for c in copies]
    for source in sources:
        assert (container_dir(job_type) / source).exists(), f"COPY {source}: no such file"
    # dependencies in their own layer, installed before the code is copied
    req_copy = next(
        n
        for n, c in enumerate(instructions)
        if c in copies and c["value"].startswith("requirements")
    )
    code_copy = next(
        n
        for n, c in enumerate(instructions)
        if c in copies and c["value"].startswith("entrypoint.py")
    )
    install = next(
        n
        for n, i in enumerate(instructions)
        if i["instruction"] == "RUN" and "requirements.txt" in i["value"]
    )
    assert req_copy < install < code_copy
    assert kinds.index("USER") > code_copy


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_entrypoint_is_the_copied_script(job_type: str) -> None:
    instructions = parsed(job_type)
    entry = next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT")
    argv = ast.literal_eval(entry)  # exec form: a JSON list
    assert isinstance(argv, list) and argv[-1] == "entrypoint.py"
    assert any(
        i["value"].startswith("entrypoint.py") for i in instructions if i["instruction"] == "COPY"
    )
    # the local runner plays the same script
    local = load_registry()[job_type].job_type.local_command
    assert Path(local[1]) == container_dir(job_type) / "entrypoint.py"


def _third_party_imports(directory: Path) -> set[str]:
    local = {p.stem for p in directory.iterdir()} | {"spellcheck_job"}
    found = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in STDLIB and top not in local and top != "__future__":
                    found.add(top)
    return found


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_requirements_agree_with_the_code(job_type: str) -> None:
    directory = container_dir(job_type)
    pins = {}
    for line in (directory / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r} is not pinned with =="
            pins[name.lower()] = version
    imported = {DISTRIBUTIONS.get(m, m) for m in _third_party_imports(directory)}
    assert imported, "no third-party import found: the check reads nothing"
    missing = imported - set(pins)
    assert not missing, f"imported but not in requirements.txt: {missing}"
    unused = set(pins) - imported
    assert not unused, f"in requirements.txt but never imported: {unused}"


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_a_gpu_image_finds_the_driver_where_the_request_mounts_it(job_type: str) -> None:
    """The request mounts the driver's directories at /usr/local/nvidia/{lib64,bin}: a GPU job
    type's image must have them on LD_LIBRARY_PATH and PATH (issue 8: vLLM must see the L4)."""
    from robotoff_batch.batch.request import GPU_CONTAINER_VOLUMES
    from robotoff_batch.config.loader import load_job_config
    from robotoff_batch.paths import JOB_CONFIGS_DIR

    resources = load_job_config(JOB_CONFIGS_DIR / f"{job_type}.yaml").config.resources
    if not resources.accelerators_type:
        pytest.skip("a CPU job type")
    env = " ".join(i["value"] for i in parsed(job_type) if i["instruction"] == "ENV")
    library_path = re.search(r"LD_LIBRARY_PATH=(\S+)", env)
    path = re.search(r"\bPATH=(\S+)", env.replace("LD_LIBRARY_PATH", "LD_LIBRARY"))
    assert library_path and path, env
    targets = [volume.split(":")[1] for volume in GPU_CONTAINER_VOLUMES]
    assert targets[0] in library_path[1].split(":")
    assert targets[1] in path[1].split(":")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
