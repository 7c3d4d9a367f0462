"""The group → Herald message translation used by the Django layer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald import ConfigurationError, InvalidMessageError, UnmappedGroupError
from herald.groups import GroupMap

LEGACY = {
    "user_{id}": {"users": "{id}", "channels": {"notification": "notifications", "order_update": "orders"}},
    "dept_{id}": "dept_{id}",
    "alerts": "alerts",
}


def test_user_groups_map_to_the_channel_of_the_type_for_that_user():
    m = GroupMap(LEGACY)
    msg = m.resolve("user_42", {"type": "notification", "data": {"title": "hi"}})
    assert (msg.channel, msg.type, msg.users, dict(msg.data)) == ("notifications", "notification", ("42",), {"title": "hi"})
    msg = m.resolve("user_42", {"type": "order.update", "data": {"id": 7}})
    assert (msg.channel, msg.type, msg.users) == ("orders", "order_update", ("42",))


def test_dept_and_literal_groups_are_broadcast_channels():
    m = GroupMap(LEGACY)
    msg = m.resolve("dept_7", {"type": "alert", "data": {}})
    assert (msg.channel, msg.users) == ("dept_7", None)
    assert m.resolve("alerts", {"type": "alert", "data": {}}).channel == "alerts"


def test_an_unmapped_group_raises_naming_it():
    hostile = 'user"CORP\\alice🦀'
    with pytest.raises(UnmappedGroupError) as info:
        GroupMap(LEGACY).resolve(hostile, {"type": "alert", "data": {}})
    assert info.value.group == hostile and repr(hostile) in str(info.value)
    assert info.value.code == "unmapped_group" and isinstance(info.value, LookupError)


def test_a_type_without_a_channel_in_a_per_user_rule_raises_naming_group_and_type():
    with pytest.raises(UnmappedGroupError) as info:
        GroupMap(LEGACY).resolve("user_42", {"type": "alert", "data": {}})
    assert "'user_42'" in str(info.value) and "'alert'" in str(info.value)


def test_a_catch_all_maps_any_other_group_to_its_name():
    m = GroupMap({**LEGACY, "{name}": "{name}"})
    assert m.resolve("materials", {"type": "material_update", "data": {}}).channel == "materials"
    assert m.resolve("dept_7", {"type": "x", "data": {}}).channel == "dept_7"  # order: first match wins


def test_type_mapping_defaults_to_dots_to_underscores_and_can_be_overridden():
    m = GroupMap({"{name}": "{name}"}, types={"order.notification": "notification"})
    assert m.resolve("g", {"type": "order.notification", "data": {}}).type == "notification"
    assert m.resolve("g", {"type": "a.b.c", "data": {}}).type == "a_b_c"
    assert m.resolve("g", {"type": "plain", "data": {}}).type == "plain"


def test_per_user_channel_choice_uses_the_mapped_type():
    m = GroupMap(LEGACY, types={"order.notification": "notification"})
    assert m.resolve("user_1", {"type": "order.notification", "data": {}}).channel == "notifications"


def test_data_is_the_data_key_or_the_rest_of_the_message():
    m = GroupMap({"{name}": "{name}"})
    assert dict(m.resolve("g", {"type": "t", "data": {"a": 1}}).data) == {"a": 1}
    rest = m.resolve("g", {"type": "t", "order_id": 5, "status": "paid"})
    assert dict(rest.data) == {"order_id": 5, "status": "paid"}
    both = m.resolve("g", {"type": "t", "data": {"a": 1}, "extra": 2})
    assert dict(both.data) == {"data": {"a": 1}, "extra": 2}  # nothing dropped


@pytest.mark.parametrize(
    "message,fragment",
    [
        ({"data": {}}, "needs a non-empty string 'type'"),
        ({"type": "", "data": {}}, "needs a non-empty string 'type'"),
        ({"type": 3, "data": {}}, "needs a non-empty string 'type'"),
        ({"type": "t", "data": [1]}, "data must be a dict"),
        ({"type": "t", "data": "text"}, "data must be a dict"),
        ("not a dict", "message must be a dict"),
    ],
)
def test_bad_messages_raise_naming_the_group(message, fragment):
    with pytest.raises(InvalidMessageError) as info:
        GroupMap({"{name}": "{name}"}).resolve("grp_🦀", message)
    assert fragment in str(info.value) and "'grp_🦀'" in str(info.value)


def test_every_message_gets_a_fresh_key():
    m = GroupMap(LEGACY)
    a = m.resolve("alerts", {"type": "alert", "data": {}})
    b = m.resolve("alerts", {"type": "alert", "data": {}})
    assert a.idempotency_key != b.idempotency_key


@pytest.mark.parametrize(
    "groups,fragment",
    [
        ({}, "non-empty mapping"),
        ({"user_{id}": {"users": "{id}"}}, "needs channel or channels"),
        ({"user_{id}": {"channel": "c", "bogus": 1}}, "unknown keys"),
        ({"user_{id}": "chan_{other}"}, "does not define"),
        ({"user_{id}": {"channel": "c", "users": "{uid}"}}, "does not define"),
        ({"a_{x}_{x}": "c"}, "repeats"),
        ({"": "c"}, "non-empty strings"),
        ({"g": 5}, "channel template or a dict"),
        ({"g": {"channels": {"t": ""}}}, "channels must map"),
        ({"g": {"channel": "c", "users": [3]}}, "users must be"),
    ],
)
def test_bad_configurations_are_refused_at_start(groups, fragment):
    with pytest.raises(ConfigurationError) as info:
        GroupMap(groups)
    assert fragment in str(info.value)


def test_bad_type_map_is_refused():
    with pytest.raises(ConfigurationError):
        GroupMap({"g": "c"}, types={"a": ""})




@given(user=st.text(min_size=1, max_size=300, alphabet=st.characters(blacklist_categories=("Cs",))))
def test_any_user_id_round_trips_through_the_user_pattern(user):
    msg = GroupMap(LEGACY).resolve(f"user_{user}", {"type": "notification", "data": {"u": user}})
    assert msg.users == (user,) and msg.channel == "notifications"


@given(
    prefix=st.text(min_size=1, max_size=20, alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="{}")),
    value=st.text(min_size=1, max_size=50, alphabet=st.characters(blacklist_categories=("Cs",))),
)
def test_patterns_are_literal_apart_from_placeholders(prefix, value):
    """Regex metacharacters in a pattern are matched literally; the placeholder captures
    exactly what follows the prefix, and a group without the prefix never matches."""
    m = GroupMap({prefix + "{v}": {"channel": "c_{v}", "users": ["{v}", "fixed"]}})
    msg = m.resolve(prefix + value, {"type": "t", "data": {}})
    assert msg.channel == "c_" + value and msg.users == (value, "fixed")
    other = "\x00" + prefix + value
    with pytest.raises(UnmappedGroupError):
        m.resolve(other, {"type": "t", "data": {}})


@given(group=st.text(min_size=1, max_size=100, alphabet=st.characters(blacklist_categories=("Cs",))))
def test_a_group_matching_nothing_always_raises_and_never_returns(group):
    m = GroupMap({"user_{id}": {"users": "{id}", "channel": "notifications"}})
    if group.startswith("user_") and len(group) > 5:
        assert m.resolve(group, {"type": "t", "data": {}}).users == (group[5:],)
    else:
        with pytest.raises(UnmappedGroupError) as info:
            m.resolve(group, {"type": "t", "data": {}})
        assert info.value.group == group
