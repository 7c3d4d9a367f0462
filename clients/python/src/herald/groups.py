"""Turns a Django Channels ``group_send(group, message)`` into a Herald :class:`Message`.

A Django backend addresses groups (``user_42``, ``dept_7``, ``alerts``); Herald addresses
channels, each restricted to some message types, plus users on per-user channels. This
module holds the translation, configured by patterns, so the channel layer stays a thin
adapter and the rules can be tested without Django.

``groups`` is an ordered mapping from a group pattern to a rule; the first pattern that
matches the whole group name wins. ``{name}`` in a pattern matches one or more characters
and can be used in the rule's templates:

- ``"dept_{id}": "dept_{id}"`` – a channel template (broadcast to the channel);
- ``"user_{id}": {"users": "{id}", "channels": {"notification": "notifications",
  "order_update": "orders"}}`` – per-user: the channel depends on the Herald type, the
  user list is rendered from the group;
- ``"{name}": "{name}"`` – a catch-all: any other group goes to the channel of its name.

A rule may have ``channel`` (a template), ``channels`` (Herald type → template; wins over
``channel`` for the types it names) and ``users`` (a template or a list of them). A group
no pattern matches, or a type a rule has no channel for, raises
:class:`~herald.errors.UnmappedGroupError` naming the group.

The message ``type`` becomes Herald's type with dots turned into underscores
(``order.notification`` → ``order_notification``) unless ``types`` maps it. The message's
``data`` becomes the data when ``type`` and ``data`` are its only keys; otherwise every key
but ``type`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from ._core import Message
from .errors import ConfigurationError, InvalidMessageError, UnmappedGroupError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
RuleSpec = Union[str, Mapping[str, Any]]


def _names(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def _render(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class _Rule:
    pattern: str
    regex: re.Pattern[str]
    channel: str | None
    channels: Mapping[str, str]
    users: tuple[str, ...] | None


def _compile(pattern: object, spec: object) -> _Rule:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigurationError(f"group patterns must be non-empty strings, not {pattern!r}")
    regex, names, at = "", [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        if m.group(1) in names:
            raise ConfigurationError(f"group pattern {pattern!r} repeats {{{m.group(1)}}}")
        names.append(m.group(1))
        regex += re.escape(pattern[at : m.start()]) + f"(?P<{m.group(1)}>.+?)"
        at = m.end()
    regex += re.escape(pattern[at:])
    if isinstance(spec, str):
        spec = {"channel": spec}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"rule for {pattern!r} must be a channel template or a dict, not {spec!r}")
    unknown = set(spec) - {"channel", "channels", "users"}
    if unknown:
        raise ConfigurationError(f"rule for {pattern!r} has unknown keys {sorted(unknown)} (channel, channels, users)")
    channel, channels, users = spec.get("channel"), spec.get("channels", {}), spec.get("users")
    if channel is not None and (not isinstance(channel, str) or not channel):
        raise ConfigurationError(f"rule for {pattern!r}: channel must be a non-empty string")
    if not isinstance(channels, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in channels.items()
    ):
        raise ConfigurationError(f"rule for {pattern!r}: channels must map Herald types to channel templates")
    if channel is None and not channels:
        raise ConfigurationError(f"rule for {pattern!r} needs channel or channels")
    if isinstance(users, str):
        users = [users]
    if users is not None and (not isinstance(users, (list, tuple)) or not all(isinstance(u, str) and u for u in users)):
        raise ConfigurationError(f"rule for {pattern!r}: users must be a template or a list of templates")
    for template in [channel or "", *channels.values(), *(users or [])]:
        missing = set(_names(template)) - set(names)
        if missing:
            raise ConfigurationError(f"rule for {pattern!r} uses {sorted(missing)}, which the pattern does not define")
    return _Rule(pattern, re.compile(regex, re.DOTALL), channel, dict(channels),
                 tuple(users) if users is not None else None)


class GroupMap:
    """The configured translation from (group, Channels message) to a Herald message."""

    def __init__(self, groups: Mapping[str, RuleSpec], types: Mapping[str, str] | None = None) -> None:
        if not isinstance(groups, Mapping) or not groups:
            raise ConfigurationError(
                "groups must be a non-empty mapping of group patterns to rules, e.g. "
                '{"user_{id}": {"users": "{id}", "channels": {"notification": "notifications"}}}'
            )
        self.rules = [_compile(p, s) for p, s in groups.items()]
        types = dict(types or {})
        if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in types.items()):
            raise ConfigurationError("types must map Channels message types to non-empty Herald types")
        self.types = types

    def herald_type(self, kind: str) -> str:
        """Herald's type for a Channels message type."""
        return self.types.get(kind, kind.replace(".", "_"))

    def resolve(self, group: str, message: Mapping[str, Any]) -> Message:
        """The Herald message for ``group_send(group, message)``; raises
        :class:`UnmappedGroupError` or :class:`InvalidMessageError`, naming the group."""
        if not isinstance(group, str) or not group:
            raise InvalidMessageError(f"group must be a non-empty string, not {group!r}")
        if not isinstance(message, Mapping):
            raise InvalidMessageError(f"group_send to {group!r}: message must be a dict, not {type(message).__name__}")
        kind = message.get("type")
        if not isinstance(kind, str) or not kind:
            raise InvalidMessageError(f"group_send to {group!r}: message needs a non-empty string 'type'")
        if set(message) == {"type", "data"}:
            data = message["data"]
        else:
            data = {k: v for k, v in message.items() if k != "type"}
        if not isinstance(data, Mapping):
            raise InvalidMessageError(
                f"group_send to {group!r}: data must be a dict (Herald carries JSON objects), not {type(data).__name__}"
            )
        herald_type = self.herald_type(kind)
        for rule in self.rules:
            m = rule.regex.fullmatch(group)
            if m is None:
                continue
            values = m.groupdict()
            template = rule.channels.get(herald_type, rule.channel)
            if template is None:
                raise UnmappedGroupError(
                    f"group {group!r} matches {rule.pattern!r}, which has no Herald channel for type "
                    f"{herald_type!r} (it maps {sorted(rule.channels)})",
                    group=group,
                )
            users = [_render(u, values) for u in rule.users] if rule.users is not None else None
            try:
                return Message(_render(template, values), herald_type, data, users)
            except InvalidMessageError as e:
                raise InvalidMessageError(f"group_send to {group!r}: {e.message}", code=e.code) from None
        raise UnmappedGroupError(
            f"group {group!r} matches no Herald mapping (patterns: {[r.pattern for r in self.rules]}); "
            "add a pattern to the layer's CONFIG['groups'], e.g. a catch-all '{name}': '{name}'",
            group=group,
        )
