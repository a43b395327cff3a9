"""Every role default is validated by the role's argument spec (documented: test_varref.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "defaults/main.yml").exists())


def _defaults(role: str) -> set[str]:
    return set(yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text()) or {})


def _spec_options(role: str) -> set[str]:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())
    return {name for entry in specs["argument_specs"].values() for name in entry["options"]}


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_in_the_argument_spec(role):
    assert _defaults(role) - _spec_options(role) == set()


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_prefixed_with_the_role_name(role):
    assert {name for name in _defaults(role) if not name.startswith(f"{role}_")} == set()


def test_preflight_checks_every_role_with_a_spec():
    checked = yaml.safe_load((ROOT / "roles/preflight/defaults/main.yml").read_text())
    with_spec = {p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml")}
    assert set(checked["preflight_roles"]) == with_spec - {"preflight"}


def _platforms(role: str) -> list[dict]:
    meta = yaml.safe_load((ROOT / "roles" / role / "meta/main.yml").read_text())
    return meta["galaxy_info"]["platforms"]


@pytest.mark.parametrize("role", ROLES)
def test_every_role_supports_the_platforms_preflight_admits(role):
    # preflight reads its own metadata's platforms: a role that lists others would be deployed
    # where it was never tested, or refused where it works.
    assert _platforms(role) == _platforms("preflight")


def test_the_local_vm_builds_the_releases_the_roles_support():
    from nspawnvm.rootfs import RELEASES

    assert _platforms("preflight") == [{"name": "Debian", "versions": list(RELEASES)}]


def test_the_profiler_role_scrubs_as_the_toolkit_does_by_default():
    # The toolkit's defaults apply when the env file has no value; the role always writes one.
    from wsgiprobe.profiler.settings import DEFAULT_KEEP_HEADERS, ProfilerSettings

    defaults = yaml.safe_load((ROOT / "roles/profiling/defaults/main.yml").read_text())
    assert defaults["profiling_keep_headers"] == list(DEFAULT_KEEP_HEADERS)
    assert defaults["profiling_redact_query"] is ProfilerSettings(Path("/x")).redact_query


def _deploy_tasks() -> list[dict]:
    return yaml.safe_load((ROOT / "deploy.yml").read_text())[0]["tasks"]


def test_deploy_yml_is_the_one_play_that_loads_the_roles():
    """Another play would load roles for their defaults only (`when: false`), or leave its
    roles' values to `| default(...)`: make rollback and make warmup are tags of deploy.yml."""
    playbooks = {p.name for p in ROOT.glob("*.yml")} - {"requirements.yml"}
    assert playbooks == {"deploy.yml", "loadgen.yml"}
    assert "roles" not in yaml.safe_load((ROOT / "loadgen.yml").read_text())[0]
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "roles").rglob("*")
        if p.suffix in {".yml", ".j2"} and "pdb_enabled | default(" in p.read_text()
    ]
    assert offenders == []


def test_the_rollback_runs_only_by_its_tag_and_tags_every_task_it_includes():
    """A dynamic include's own tags reach the include only: `apply` tags what it loads (and the
    includes nested in it); `never` keeps a deploy from running it."""
    (task,) = [t for t in _deploy_tasks() if "rollback" in t.get("tags", [])]
    assert set(task["tags"]) == {"rollback", "never"}
    assert task["ansible.builtin.include_role"]["apply"]["tags"] == ["rollback"]
    assert task["when"] == "topology_is_app"


def test_the_warm_up_runs_by_its_tag_and_in_every_deploy():
    (task,) = [t for t in _deploy_tasks() if "warmup" in t.get("tags", [])]
    assert task["tags"] == ["warmup"]
    assert task["ansible.builtin.import_role"]["name"] == "warmup"


def test_the_topology_fact_other_roles_defaults_read_is_published_under_any_tags():
    """make warmup and make rollback run deploy.yml with tags: every role's argument spec check
    (tagged always) still templates defaults that read topology_address (an lb's upstreams,
    an app host's store address), which the topology role publishes."""
    tasks = yaml.safe_load((ROOT / "roles/topology/tasks/main.yml").read_text())
    (task,) = [t for t in tasks if "topology_address" in t.get("ansible.builtin.set_fact", {})]
    assert task["tags"] == ["always"]
