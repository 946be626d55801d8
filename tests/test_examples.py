"""The examples in the repository are valid: fleet files, Kubernetes manifests, CI workflow.

No cluster and no GitHub here, so the manifests and the workflow are checked against the
published schemas bundled with kubernetes-validate and check-jsonschema; each check is shown
to reject a broken copy, so it cannot pass vacuously.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from qoe.fleet import expand, load_fleet, parse_fleet

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
K8S_VERSION = "1.30.0"


def test_example_fleet_is_valid_and_probes_the_embedded_room() -> None:
    fleet = load_fleet(EXAMPLES / "fleet.toml")
    assert all(t.url.startswith("http://127.0.0.1:8080/") for t in fleet.targets)
    assert len(expand(fleet)) == 5 and len(fleet.slos) >= 5


@pytest.mark.parametrize("name", ["indexed-job.yaml", "cronjob.yaml", "configmap.yaml"])
def test_kubernetes_manifests_match_the_schema(name: str) -> None:
    document = yaml.safe_load((EXAMPLES / "k8s" / name).read_text())
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    document = yaml.safe_load((EXAMPLES / "k8s" / "indexed-job.yaml").read_text())
    broken = copy.deepcopy(document)
    broken["spec"]["completions"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(document)
    broken["spec"]["template"]["spec"]["containers"][0]["argz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_jobs_shard_by_completion_index_and_run_the_configmap_fleet() -> None:
    config = yaml.safe_load((EXAMPLES / "k8s" / "configmap.yaml").read_text())
    fleet = parse_fleet(config["data"]["fleet.toml"], "configmap.yaml:fleet.toml")
    assert len(expand(fleet)) == 2 * 4 * 3
    job = yaml.safe_load((EXAMPLES / "k8s" / "indexed-job.yaml").read_text())
    cron = yaml.safe_load((EXAMPLES / "k8s" / "cronjob.yaml").read_text())
    for spec in (job["spec"], cron["spec"]["jobTemplate"]["spec"]):
        assert spec["completionMode"] == "Indexed"
        args = spec["template"]["spec"]["containers"][0]["args"]
        assert args[:3] == ["fleet", "run", "/etc/qoe/fleet.toml"]
        assert args[args.index("--shard") + 1] == f"auto/{spec['completions']}"


def _check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_github_workflow_matches_the_schema(tmp_path: Path) -> None:
    path = EXAMPLES / "github" / "qoe-fleet.yml"
    done = _check_workflow(path)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(path.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1))
    assert _check_workflow(broken).returncode != 0
    workflow = yaml.safe_load(path.read_text())
    assert workflow["jobs"]["probe"]["strategy"]["matrix"]["shard"] == [1, 2, 3]
    steps = " ".join(str(s.get("run", "")) for s in workflow["jobs"]["verdict"]["steps"])
    assert "qoe fleet report --fleet" in steps and "--junit junit.xml" in steps
