"""Planning against the simulator over loopback: what is picked, in what order, with what calls."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest

from airbyte_fleet.api import (
    AuthError,
    Connection,
    NotFoundError,
    ServerError,
)
from airbyte_fleet.engine.options import Selection
from airbyte_fleet.engine.plan import Plan, PlanError, PlanPart, build_plan, stream_plan
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.simulator import Simulator
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

View = dict[str, Any]


def _tags(view: View) -> set[str]:
    return {tag["name"] for tag in view["tags"]}


def _sorted_ids(views: list[View]) -> list[str]:
    ordered = sorted(views, key=lambda v: (v["name"].casefold(), v["name"], v["connectionId"]))
    return [v["connectionId"] for v in ordered]


def _matching(sim: Simulator, predicate: Callable[[View], bool]) -> list[str]:
    return _sorted_ids([v for v in sim.connections if predicate(v)])


def _ids(plan: Plan) -> list[str]:
    return [item.connection_id for item in plan.items]


def _unknown_id(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


async def _plan(root: str, selection: Selection, **kwargs: Any) -> Plan:
    async with client_for(root) as client:
        return await build_plan(client, selection, **kwargs)


# ----------------------------------------------------------------------------- explicit ids


async def test_explicit_ids_keep_order_and_are_fetched_one_by_one(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=30, workspaces=2, seed=1)
    wanted = [sim.connections[i]["connectionId"] for i in (17, 3, 25, 0)]
    plan = await _plan(root, Selection(connections=wanted))
    assert _ids(plan) == wanted
    assert sim.count("GET", "/connections/{connectionId}") == 4
    assert sim.count("GET", "/connections") == 0
    assert all(item.selected_by == "selection" for item in plan.items)
    assert plan.connections_listed is None


async def test_explicit_ids_are_deduplicated_across_spellings(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=5, workspaces=1)
    first, second = (sim.connections[i]["connectionId"] for i in (2, 4))
    spellings = [first, second, first.upper(), first.replace("-", ""), second]
    plan = await _plan(root, Selection(connections=spellings))
    assert _ids(plan) == [first, second]
    assert sim.count("GET", "/connections/{connectionId}") == 2


async def test_unknown_ids_are_reported_together_and_nothing_runs(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=10, workspaces=1)
    known = sim.connections[0]["connectionId"]
    missing = [_unknown_id(1), _unknown_id(2), _unknown_id(3)]
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection(connections=[missing[0], known, missing[1], missing[2]]))
    message = caught.value.message
    assert message == (
        f"Connections {missing[0]}, {missing[1]}, {missing[2]} do not exist or these "
        "credentials cannot see them; check --connection."
    )
    assert isinstance(caught.value, ConfigError)
    assert known not in message
    # Every id was looked up (all problems in one go), none was triggered.
    assert sim.count("GET", "/connections/{connectionId}") == 4
    assert sim.count("POST", "/jobs") == 0


async def test_one_unknown_id_reads_as_singular(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=2, workspaces=1)
    with pytest.raises(PlanError, match=r"^Connection \S+ does not exist .* see it; check"):
        await _plan(root, Selection(connections=[_unknown_id(7)]))


async def test_many_unknown_ids_stay_one_short_sentence(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=2, workspaces=1)
    missing = [_unknown_id(n) for n in range(1, 26)]
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection(connections=missing))
    message = caught.value.message
    assert "and 15 more" in message
    assert missing[9] in message
    assert missing[10] not in message
    assert "\n" not in message


async def test_forbidden_id_counts_as_unknown(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    hidden = sim.connections[1]["connectionId"]
    async with client_for(root) as client:
        real = client.get_connection

        async def get_connection(connection_id: str) -> Connection:
            if connection_id == hidden:
                raise AuthError("Airbyte does not allow it (HTTP 403).", status=403)
            return await real(connection_id)

        monkeypatch.setattr(client, "get_connection", get_connection)
        with pytest.raises(PlanError, match=f"Connection {hidden} does not exist"):
            await build_plan(client, Selection(connections=[hidden]))


async def test_unknown_ids_from_a_group_name_the_group(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=2, workspaces=1)
    groups = {"finance": Selection(connections=[_unknown_id(9)])}
    with pytest.raises(PlanError, match="check --connection and the connections of group finance"):
        await _plan(root, Selection(groups=["finance"]), groups=groups)


async def test_lookups_run_concurrently_within_the_limit(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    wanted = [v["connectionId"] for v in sim.connections]
    in_flight = peak = 0
    async with client_for(root) as client:
        real = client.get_connection

        async def get_connection(connection_id: str) -> Connection:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await real(connection_id)
            finally:
                in_flight -= 1

        monkeypatch.setattr(client, "get_connection", get_connection)
        plan = await build_plan(client, Selection(connections=wanted), lookup_concurrency=4)
    assert _ids(plan) == wanted
    assert 1 < peak <= 4


async def test_lookup_concurrency_must_be_positive(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1, workspaces=1)
    with pytest.raises(ValueError, match="lookup_concurrency"):
        await _plan(
            root,
            Selection(connections=[sim.connections[0]["connectionId"]]),
            lookup_concurrency=0,
        )


async def test_server_error_during_lookup_propagates_unchanged(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, root = await make_sim(connections=20, workspaces=1)
    wanted = [v["connectionId"] for v in sim.connections]
    async with client_for(root) as client:
        real = client.get_connection

        async def get_connection(connection_id: str) -> Connection:
            if connection_id == wanted[5]:
                raise ServerError("Airbyte failed (HTTP 500).", status=500)
            return await real(connection_id)

        monkeypatch.setattr(client, "get_connection", get_connection)
        with pytest.raises(ServerError, match=r"HTTP 500"):
            await build_plan(client, Selection(connections=wanted), lookup_concurrency=2)


async def test_bad_credentials_propagate_as_auth_errors(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    some_id = sim.connections[0]["connectionId"]
    for selection in (Selection(connections=[some_id]), Selection(all=True)):
        async with client_for(root, client_secret="wrong") as client:
            with pytest.raises(AuthError) as caught:
                await build_plan(client, selection)
        assert not isinstance(caught.value, PlanError)
    assert sim.count("POST", "/jobs") == 0


async def test_not_found_is_not_leaked_as_such(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=1, workspaces=1)
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection(connections=[_unknown_id(3)]))
    assert not isinstance(caught.value, NotFoundError)


# ----------------------------------------------------------------------------- filters


async def test_all_lists_once_and_sorts_by_name(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=130, workspaces=3)
    plan = await _plan(root, Selection(all=True))
    assert _ids(plan) == _sorted_ids(sim.connections)
    # 130 connections: two pages of one listing, and no per-connection lookups.
    assert sim.count("GET", "/connections") <= 3  # 2 pages, and at most one asked ahead
    assert sim.count("GET", "/connections/{connectionId}") == 0
    assert plan.connections_listed == 130
    assert plan.warnings == ()


async def test_name_globs_ignore_case_and_any_glob_matches(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    plan = await _plan(root, Selection(names=["postgres*", "*→ duckdb*"]))
    expected = _matching(
        sim,
        lambda v: v["name"].lower().startswith("postgres") or "→ duckdb" in v["name"].lower(),
    )
    assert expected
    assert _ids(plan) == expected


async def test_name_glob_character_classes(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=30, workspaces=1)
    plan = await _plan(root, Selection(names=["* 00[1-3]"]))
    assert _ids(plan) == _sorted_ids(sim.connections[:3])
    assert sorted(item.connection_name[-3:] for item in plan.items) == ["001", "002", "003"]


async def test_tags_ignore_case_and_any_tag_matches(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    plan = await _plan(root, Selection(tags=["NIGHTLY", "Finance"]))
    expected = _matching(sim, lambda v: bool(_tags(v) & {"nightly", "finance"}))
    assert expected
    assert _ids(plan) == expected


async def test_workspace_filter_is_sent_to_the_server(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=30, workspaces=3)
    workspace = sim.workspaces[2]["workspaceId"]
    plan = await _plan(root, Selection(workspaces=[workspace]))
    assert _ids(plan) == _matching(sim, lambda v: v["workspaceId"] == workspace)
    assert sim.count("GET", "/connections") == 1
    (listing,) = [e for e in sim.exchanges if e.route == "/connections" and e.method == "GET"]
    assert parse_qs(listing.query)["workspaceIds"] == [workspace]


async def test_filters_intersect(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=120, workspaces=2)
    workspace = sim.workspaces[0]["workspaceId"]
    selection = Selection(names=["github*", "stripe*"], tags=["nightly"], workspaces=[workspace])
    plan = await _plan(root, selection)
    expected = _matching(
        sim,
        lambda v: (
            v["workspaceId"] == workspace
            and "nightly" in _tags(v)
            and v["name"].lower().startswith(("github", "stripe"))
        ),
    )
    assert expected, "the seed must give at least one connection for this test to mean anything"
    assert _ids(plan) == expected


async def test_all_with_a_filter_is_just_the_filter(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=30, workspaces=2)
    plan = await _plan(root, Selection(all=True, tags=["hourly"]))
    assert _ids(plan) == _matching(sim, lambda v: "hourly" in _tags(v))


async def test_explicit_ids_first_then_matches_without_duplicates(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    nightly = _matching(sim, lambda v: "nightly" in _tags(v))
    other = next(v["connectionId"] for v in sim.connections if "nightly" not in _tags(v))
    explicit = [nightly[-1], other]
    plan = await _plan(root, Selection(connections=explicit, tags=["nightly"]))
    assert _ids(plan) == [nightly[-1], other, *nightly[:-1]]
    # Only the id the listing did not already return needed its own lookup.
    assert sim.count("GET", "/connections") == 1
    assert sim.count("GET", "/connections/{connectionId}") == 0


async def test_explicit_id_outside_the_listed_workspace_is_fetched(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=20, workspaces=2)
    ws0, ws1 = (w["workspaceId"] for w in sim.workspaces)
    outside = next(v["connectionId"] for v in sim.connections if v["workspaceId"] == ws1)
    plan = await _plan(root, Selection(connections=[outside], workspaces=[ws0]))
    assert _ids(plan) == [outside, *_matching(sim, lambda v: v["workspaceId"] == ws0)]
    assert sim.count("GET", "/connections/{connectionId}") == 1


# ----------------------------------------------------------------------------- inactive


async def test_inactive_connections_are_skipped_with_a_reason(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=20, workspaces=2, inactive_connections=3)
    locked = sim.connections[0]["connectionId"]
    sim.set_connection_status(locked, "locked")
    plan = await _plan(root, Selection(all=True))
    assert len(plan.items) == 20
    reasons = {item.connection_id: item.skip_reason for item in plan.skipped}
    inactive = {v["connectionId"] for v in sim.connections if v["status"] == "inactive"}
    assert len(inactive) == 3
    assert reasons == {locked: "connection is locked"} | dict.fromkeys(
        inactive, "connection is inactive"
    )
    assert len(plan.runnable) == 16
    assert all(item.skip_reason is None for item in plan.runnable)


async def test_include_inactive_runs_them(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=10, workspaces=1, inactive_connections=2)
    inactive = [v["connectionId"] for v in sim.connections if v["status"] == "inactive"]
    plan = await _plan(root, Selection(connections=inactive), include_inactive=True)
    assert [item.connection_id for item in plan.runnable] == inactive
    assert plan.skipped == ()


async def test_deleted_connections_are_skipped_even_with_include_inactive(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=4, workspaces=1)
    deleted = sim.connections[2]["connectionId"]
    sim.set_connection_status(deleted, "deprecated")
    plan = await _plan(root, Selection(connections=[deleted]), include_inactive=True)
    assert [item.skip_reason for item in plan.items] == ["connection is deprecated (deleted)"]
    assert plan.runnable == ()


# ----------------------------------------------------------------------------- groups


async def test_groups_are_unioned_whatever_their_filters(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    explicit = sim.connections[5]["connectionId"]
    groups = {
        "finance": Selection(tags=["finance"], connections=[explicit]),
        "warehouse": Selection(names=["* → snowflake*"]),
        "unused": Selection(all=True),
    }
    plan = await _plan(root, Selection(groups=["finance", "warehouse"]), groups=groups)
    matches = _matching(sim, lambda v: "finance" in _tags(v) or "→ snowflake" in v["name"].lower())
    assert _ids(plan) == [explicit, *[cid for cid in matches if cid != explicit]]
    by = {item.connection_id: item.selected_by for item in plan.items}
    assert by[explicit] == "group finance"
    assert {by[cid] for cid in matches if cid != explicit} <= {"group finance", "group warehouse"}


async def test_command_line_filters_and_a_group_are_unioned(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    groups = {"finance": Selection(tags=["finance"])}
    plan = await _plan(root, Selection(names=["github*"], groups=["finance"]), groups=groups)
    assert _ids(plan) == _matching(
        sim, lambda v: "finance" in _tags(v) or v["name"].lower().startswith("github")
    )
    assert sim.count("GET", "/connections") == 1


async def test_nested_groups_are_expanded_once(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=20, workspaces=2)
    groups = {  # finance is reached twice: directly and through close
        "month-end": Selection(groups=["finance", "close"]),
        "close": Selection(groups=["finance"]),
        "finance": Selection(tags=["finance"]),
    }
    plan = await _plan(root, Selection(groups=["month-end"]), groups=groups)
    assert _ids(plan) == _matching(sim, lambda v: "finance" in _tags(v))


@pytest.mark.parametrize(
    ("groups", "cycle"),
    [
        ({"a": Selection(groups=["a"])}, "a -> a"),
        ({"a": Selection(groups=["b"]), "b": Selection(groups=["a"])}, "a -> b -> a"),
        # A cycle is a mistake even when its groups select something.
        (
            {
                "a": Selection(tags=["x"], groups=["b"]),
                "b": Selection(groups=["c"]),
                "c": Selection(groups=["b"]),
            },
            "b -> c -> b",
        ),
    ],
)
async def test_a_group_that_includes_itself_is_a_cycle(
    make_sim: SimFactory, groups: dict[str, Selection], cycle: str
) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection(groups=["a"]), groups=groups)
    names = cycle.split(" -> ")
    assert caught.value.message == (
        f"Group {names[0]} includes itself ({cycle}); remove '{names[-1]}' from the groups of "
        f"group {names[-2]}."
    )
    assert sim.count("GET", "/connections") == 0


async def test_unknown_group_names_the_known_ones(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    groups = {"finance": Selection(tags=["finance"]), "hourly": Selection(tags=["hourly"])}
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection(groups=["finanse", "hourly", "x"]), groups=groups)
    assert caught.value.message == (
        "Unknown groups 'finanse', 'x' (the config file defines finance, hourly); check --group "
        "or add a [groups.NAME] table to the config file."
    )
    with pytest.raises(PlanError, match="no groups are defined: no config file was read"):
        await _plan(root, Selection(groups=["finance"]))
    assert sim.count("GET", "/connections") == 0


async def test_group_workspaces_scope_the_listing_only_when_every_part_does(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=30, workspaces=3)
    ws = [w["workspaceId"] for w in sim.workspaces]
    groups = {
        "a": Selection(workspaces=[ws[0]]),
        "b": Selection(workspaces=[ws[1]], tags=["hourly"]),
    }
    plan = await _plan(root, Selection(groups=["a", "b"]), groups=groups)
    assert _ids(plan) == _matching(
        sim,
        lambda v: v["workspaceId"] == ws[0] or (v["workspaceId"] == ws[1] and "hourly" in _tags(v)),
    )
    assert not any(item.workspace_id == ws[2] for item in plan.items)
    (listing,) = [e for e in sim.exchanges if e.route == "/connections" and e.method == "GET"]
    assert sorted(parse_qs(listing.query)["workspaceIds"]) == sorted(ws[:2])
    # One part without a workspace means the listing must cover every workspace.
    groups["c"] = Selection(tags=["finance"])
    plan = await _plan(root, Selection(groups=["a", "b", "c"]), groups=groups)
    assert any(item.workspace_id == ws[2] for item in plan.items)
    last = [e for e in sim.exchanges if e.route == "/connections" and e.method == "GET"][-1]
    assert "workspaceIds" not in parse_qs(last.query)


# ----------------------------------------------------------------------------- nothing


async def test_empty_selection_is_refused_without_any_request(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection())
    assert caught.value.message == (
        "Nothing selected; pass --connection ID, --name GLOB, --tag NAME, --workspace ID, "
        "--group NAME or --all."
    )
    assert sim.exchanges == []


async def test_a_group_that_selects_nothing_says_so(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    groups = {"empty": Selection(), "outer": Selection(groups=["empty"])}
    with pytest.raises(PlanError, match=r"^Group empty selects nothing; give it"):
        await _plan(root, Selection(groups=["outer"]), groups=groups)
    groups["full"] = Selection(all=True)
    plan = await _plan(root, Selection(groups=["outer", "full"]), groups=groups)
    assert _ids(plan) == _sorted_ids(sim.connections)
    assert plan.warnings == ("group empty selects nothing",)


async def test_selection_matching_nothing_says_what_was_asked(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=25, workspaces=2)
    with pytest.raises(PlanError) as caught:
        await _plan(root, Selection(names=["oracle*"], tags=["nightly", "weekly"]))
    message = caught.value.message
    assert message.startswith(
        "The selection name 'oracle*' and (tag 'nightly' or tag 'weekly') matched none of the "
        "25 connections these credentials can see;"
    )
    assert "\n" not in message
    assert sim.count("POST", "/jobs") == 0


async def test_nothing_to_match_against(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=0, workspaces=1)
    with pytest.raises(PlanError, match="The selection --all matched none of the 0 connections"):
        await _plan(root, Selection(all=True))


async def test_a_part_that_matched_nothing_is_a_warning(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=20, workspaces=2)
    plan = await _plan(root, Selection(tags=["nightly", "nighty"], names=["*"]))
    assert _ids(plan) == _matching(sim, lambda v: "nightly" in _tags(v))
    assert plan.warnings == ("tag 'nighty' is on no connection",)
    groups = {"typo": Selection(names=["oracle*"])}
    plan = await _plan(root, Selection(tags=["nightly"], groups=["typo"]), groups=groups)
    assert plan.warnings == (
        "name 'oracle*' in group typo matched none of the 20 connections listed",
    )


# ----------------------------------------------------------------------------- describe


async def test_describe_is_json_ready(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6, workspaces=1, inactive_connections=1)
    plan = await _plan(root, Selection(all=True))
    rows = json.loads(json.dumps(plan.describe()))
    assert [row["connection_id"] for row in rows] == _ids(plan)
    inactive = next(v for v in sim.connections if v["status"] == "inactive")
    row = next(r for r in rows if r["connection_id"] == inactive["connectionId"])
    assert row == {
        "connection_id": inactive["connectionId"],
        "name": inactive["name"],
        "workspace_id": inactive["workspaceId"],
        "status": "inactive",
        "tags": [tag["name"] for tag in inactive["tags"]],
        "action": "skip",
        "skip_reason": "connection is inactive",
        "selected_by": "selection",
    }
    assert sum(r["action"] == "run" for r in rows) == 5


# ----------------------------------------------------------------------------- in parts


async def _streamed(root: str, selection: Selection, **kwargs: Any) -> list[PlanPart]:
    async with client_for(root) as client:
        return [part async for part in stream_plan(client, selection, **kwargs)]


async def test_a_plan_in_parts_holds_what_the_whole_plan_holds_page_by_page(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=350, workspaces=3, seed=4, inactive_connections=20)
    first = sim.connections[7]["connectionId"]
    selection = Selection(
        connections=[first], names=["*", "no-such-name*"], tags=["nightly", "no-such-tag"]
    )
    whole = await _plan(root, selection)
    parts = await _streamed(root, selection)
    assert [p.final for p in parts] == [False] * (len(parts) - 1) + [True]
    items = [item for part in parts for item in part.items]
    # The same connections, skip reasons and warnings; only the order differs (sorted per page).
    assert sorted(items, key=lambda i: i.connection_id) == sorted(
        whole.items, key=lambda i: i.connection_id
    )
    assert parts[-1].warnings == whole.warnings
    assert items[0].connection_id == first
    assert len(parts) > 1
    for part in parts[1:]:
        names = [i.connection_name.casefold() for i in part.items]
        assert names == sorted(names)
    assert parts[-1].connections_listed == 350


async def test_a_plan_in_parts_fails_as_the_whole_plan_does(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=250, seed=4)
    with pytest.raises(PlanError, match="does not exist"):
        await _streamed(root, Selection(connections=[_unknown_id(1)], all=True))
    # Looked up first: not one page was read for a plan that cannot be made.
    assert sim.count("GET", "/connections") == 0
    with pytest.raises(PlanError, match="matched none of the 250 connections"):
        await _streamed(root, Selection(names=["no-such-name*"]))
