"""`RunIf` (tests/helpers/run_if.py): a missing component skips, with its reason, or fails
under EXPERIMENTS_REQUIRE_ALL=1. Checked with components that cannot exist."""

from __future__ import annotations

import pytest

from tests.helpers import REPO, RunIf
from tests.helpers.run_if import COMPONENTS, REQUIRE_ALL, decide, missing, require

pytest_plugins = ("pytester",)

NO_PROGRAM = "experiments-no-such-program-7f3c"
NO_MODULE = "experiments_no_such_module_7f3c"


def test_present_components_run():
    assert decide([], {REQUIRE_ALL: "1"}) == ("run", "")
    assert missing(["executable:python3", "module:pytest"]) == []


def test_a_missing_component_skips_with_its_reason_in_words():
    reasons = missing([f"executable:{NO_PROGRAM}", f"module:{NO_MODULE}"])
    assert len(reasons) == 2
    assert f"the program {NO_PROGRAM!r} is not on PATH" in reasons[0]
    assert f"the Python module {NO_MODULE!r} cannot be imported" in reasons[1]
    for environ in ({}, {REQUIRE_ALL: ""}, {REQUIRE_ALL: "0"}, {REQUIRE_ALL: "false"}):
        action, reason = decide(reasons, environ)
        assert action == "skip", environ
        assert reason == "missing system component: " + " | ".join(reasons)


def test_a_missing_component_fails_when_all_are_required():
    reasons = missing([f"executable:{NO_PROGRAM}"])
    for value in ("1", "true", "yes"):
        action, reason = decide(reasons, {REQUIRE_ALL: value})
        assert action == "fail"
        assert reason.startswith(f"{REQUIRE_ALL}=1 (CI") and NO_PROGRAM in reason


def test_require_skips_or_fails_the_running_test(monkeypatch):
    monkeypatch.delenv(REQUIRE_ALL, raising=False)
    with pytest.raises(pytest.skip.Exception, match=NO_PROGRAM):
        require(f"executable:{NO_PROGRAM}")
    monkeypatch.setenv(REQUIRE_ALL, "1")
    with pytest.raises(pytest.fail.Exception, match=NO_PROGRAM):
        require(f"executable:{NO_PROGRAM}")
    require("executable:python3")  # present: nothing happens


def test_every_component_answers_and_unknown_names_are_refused():
    for name in COMPONENTS:  # present or not here, each says so without raising
        reasons = missing([name])
        assert reasons == [] or "; install: " in reasons[0], reasons
    with pytest.raises(ValueError, match="unknown component 'postgres_sever'"):
        missing(["postgres_sever"])
    with pytest.raises(ValueError, match="name at least one"):
        RunIf()
    assert RunIf(postgres_server=True, executables=["x"]).mark.args == (
        "postgres_server",
        "executable:x",
    )


def test_the_marker_skips_or_fails_through_the_suites_conftest(pytester, monkeypatch):
    """The real tests/conftest.py hook: a skip with its reason, or an error under CI's
    variable; in both cases before the test's fixtures are set up."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        f"""
        import pytest
        from tests.helpers import RunIf

        @pytest.fixture
        def expensive():
            raise AssertionError("set up although the component is missing")

        @RunIf(executables=[{NO_PROGRAM!r}])
        def test_needs_it(expensive):
            pass

        def test_plain():
            pass
        """
    )
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the inner runs need none
    monkeypatch.delenv(REQUIRE_ALL, raising=False)
    skipped = pytester.runpytest("--strict-markers", "-rs", "-p", "no:cacheprovider")
    skipped.assert_outcomes(passed=1, skipped=1)
    skipped.stdout.fnmatch_lines(
        [f"SKIPPED [[]1[]] test_*.py:*: missing system component: the program '{NO_PROGRAM}'*"]
    )

    monkeypatch.setenv(REQUIRE_ALL, "1")
    failed = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    failed.assert_outcomes(passed=1, errors=1)
    failed.stdout.fnmatch_lines([f"{REQUIRE_ALL}=1 (CI*, but missing system component: *"])
    assert "set up although" not in failed.stdout.str()
