"""One source for every role variable: the argument specs, and the defaults they describe.

roles/VARIABLES.md is generated from them by tools/varref.py (`make reference`); these tests
fail when it is stale, or when the specs and the defaults disagree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import varref

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


def test_the_committed_reference_is_the_generated_one():
    committed = (ROOT / varref.OUTPUT).read_text()
    assert committed == varref.render(ROOT), "roles/VARIABLES.md is stale: run `make reference`"


def test_the_check_mode_refuses_a_stale_reference(tmp_path, monkeypatch, capsys):
    for path in [*ROOT.glob("roles/*/meta/argument_specs.yml"), *ROOT.glob("roles/*/*/main.yml")]:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (tmp_path / varref.PLAY).write_text((ROOT / varref.PLAY).read_text())
    monkeypatch.setattr(varref, "ROOT", tmp_path)
    assert varref.main([]) == 0
    assert varref.main(["--check"]) == 0
    defaults = tmp_path / "roles/base/defaults/main.yml"
    defaults.write_text(defaults.read_text().replace("86400", "3600"))
    capsys.readouterr()
    assert varref.main(["--check"]) == 1
    assert "+| `base_apt_cache_valid_time` | int | `3600` |" in capsys.readouterr().out


def test_the_roles_are_listed_in_the_plays_order():
    order = varref.role_order(ROOT)
    assert sorted(order) == ROLES
    assert order[:3] == ["topology", "preflight", "base"]
    assert order.index("app") < order.index("nginx") < order.index("release")


@pytest.mark.parametrize(
    ("text", "cell"),
    [("a | b", "a \\| b"), ("one\n  two", "one two")],
)
def test_a_cell_is_one_line_with_its_pipes_escaped(text, cell):
    assert varref.cell(text) == cell


def test_spec_text_keeps_its_angle_brackets():
    assert varref.prose("configs/<env> & co") == "configs/&lt;env> &amp; co"


def test_defaults_are_shown_as_written_on_one_line():
    source = (
        'quoted: "{{ x | default(1) }}"\n'
        "plain: 80\n"
        "folded: >-\n  {{ a\n     if b else c }}\n"
        "block:\n  - one\n  - two\n"
        "mapping:\n  a: [1, 2]\n"
    )
    assert varref.default_texts(source) == {
        "quoted": '"{{ x | default(1) }}"',
        "plain": "80",
        "folded": "{{ a if b else c }}",
        "block": "[one, two]",
        "mapping": "{a: [1, 2]}",
    }


def _specs(role: str) -> dict[str, dict]:
    return varref.load_role(ROOT, role).specs


@pytest.mark.parametrize("role", ROLES)
def test_every_spec_option_has_a_value_or_is_the_callers(role):
    """Every option of a role's spec gets its value from the role itself, or from its caller.

    The rule: each option of the `main` entry point (what the deploy's play runs) has a value in
    the role's defaults/main.yml or vars/main.yml. An option of another entry point (a
    `tasks_from` the role's callers include) has one there too, or is marked `required`: its
    caller passes it (supervisor's `program`: the app server roles and release pass the
    program's command and stop signal). Every default is an option of the spec
    (test_role_contracts.test_every_default_is_in_the_argument_spec).
    """
    info = varref.load_role(ROOT, role)
    valued = set(info.defaults) | set(info.vars)
    missing = {
        f"{entry}: {name}"
        for entry, spec in info.specs.items()
        for name, option in (spec.get("options") or {}).items()
        if name not in valued and (entry == "main" or not option.get("required"))
    }
    assert missing == set()


@pytest.mark.parametrize("role", ROLES)
def test_a_spec_default_is_the_defaults_value(role):
    info = varref.load_role(ROOT, role)
    differing = {
        f"{entry}: {name}: spec {option['default']!r}, defaults/main.yml {info.defaults[name]!r}"
        for entry, spec in info.specs.items()
        for name, option in (spec.get("options") or {}).items()
        if "default" in option
        and name in info.defaults
        and option["default"] != info.defaults[name]
    }
    assert differing == set()


@pytest.mark.parametrize("role", ROLES)
def test_a_spec_default_is_also_in_the_defaults(role):
    # defaults/main.yml holds every default: the reference shows it, and a spec default alone
    # would apply to the entry point's check but not to the role's tasks.
    info = varref.load_role(ROOT, role)
    alone = {
        name
        for spec in info.specs.values()
        for name, option in (spec.get("options") or {}).items()
        if "default" in option and name not in info.defaults
    }
    assert alone == set()


def test_every_role_has_a_row_in_the_roles_readme_linking_its_variables():
    readme = (ROOT / "roles/README.md").read_text()
    missing = {role for role in ROLES if f"[{role}](VARIABLES.md#{role})" not in readme}
    assert missing == set()
