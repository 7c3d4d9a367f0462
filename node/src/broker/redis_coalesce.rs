//! Coalescing windows in Redis: the rules of [`crate::coalesce::window`], run as Lua
//! scripts on the channel's hash slot so that nodes of a cluster share every window.
//!
//! A trailing window's latest message waits in the channel's `pending` hash, its end
//! in the `due` sorted set (Redis clock, so nodes agree on it). Taking a closed window
//! moves its message to `inflight` under a lease, atomically, so exactly one node
//! publishes it; the lease ends when that publish is done, and a lease that runs out
//! (its node died mid-flush) hands the message out again. A global index of channels
//! with open windows (`herald:coalesce:due`, scored at most their earliest window
//! end) is what every node polls to flush the windows of a node that died.
//!
//! Every key expires a day after its last write, so state abandoned by a whole
//! cluster going away does not stay forever.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use herald_contract::keys::coalesce as keys;

use super::{wire, BrokerError, Hold, Taken};
use crate::coalesce::window::MAX_OPEN_WINDOWS;
use crate::message::Message;

/// Redis time in milliseconds, as `now`.
const NOW_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: pending, due. ARGV: coalescing key, `<id> <message>`, window ms, most open
/// windows. Returns {end (-1 when full), now, opened, superseded}. A window past its
/// end that was not taken yet (its node may be gone) is joined and reported as
/// opened, so the caller flushes it.
const HOLD_LUA: &str = r"
local ends = redis.call('ZSCORE', KEYS[2], ARGV[1])
local result
if ends then
  local superseded = redis.call('HEXISTS', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  local overdue = 0
  if tonumber(ends) <= now then overdue = 1 end
  result = {tonumber(ends), now, overdue, superseded}
elseif redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {-1, now, 0, 0}
else
  local e = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], e, ARGV[1])
  result = {e, now, 1, 0}
end
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return result
";

/// KEYS: pending, due, inflight, lease. ARGV: all (1/0), lease ms, most messages.
/// Returns {next window end or lease end (-1 when none), messages}.
const TAKE_LUA: &str = r"
local upto = now
if ARGV[1] == '1' then upto = '+inf' end
local lease = now + tonumber(ARGV[2])
local out = {}
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', upto, 'LIMIT', 0, ARGV[3])) do
  local v = redis.call('HGET', KEYS[1], k)
  redis.call('HDEL', KEYS[1], k)
  redis.call('ZREM', KEYS[2], k)
  if v then
    local id = string.match(v, '^(%S+) ')
    redis.call('HSET', KEYS[3], id, v)
    redis.call('ZADD', KEYS[4], lease, id)
    out[#out + 1] = v
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, ARGV[3])) do
  local v = redis.call('HGET', KEYS[3], id)
  if v then
    redis.call('ZADD', KEYS[4], lease, id)
    out[#out + 1] = v
  else
    redis.call('ZREM', KEYS[4], id)
  end
end
redis.call('PEXPIRE', KEYS[3], 86400000)
redis.call('PEXPIRE', KEYS[4], 86400000)
local next_due = -1
local w = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #w > 0 then next_due = tonumber(w[2]) end
local l = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if #l > 0 and (next_due < 0 or tonumber(l[2]) < next_due) then next_due = tonumber(l[2]) end
return {next_due, out}
";

/// KEYS: inflight, lease. ARGV: message id.
const DONE_LUA: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
";

/// KEYS: index. ARGV: channel, window ms. Marks the channel as holding a window
/// ending by now + window, before the window is opened: a node dying in between
/// leaves a harmless mark, never an unmarked window. An overdue mark is replaced
/// (whoever flushes the new window flushes the overdue ones with it).
const MARK_LUA: &str = r"
local s = now + tonumber(ARGV[2])
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) <= now or s < tonumber(cur) then
  redis.call('ZADD', KEYS[1], s, ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], 86400000)
return 0
";

/// KEYS: index. ARGV: channel, its next window end after a take (-1: none). An
/// overdue mark is moved to the next end, or removed; a future mark (a window opened
/// since) is only lowered.
const REMARK_LUA: &str = r"
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
local nxt = tonumber(ARGV[2])
if cur and tonumber(cur) <= now then
  if nxt < 0 then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], nxt, ARGV[1]) end
elseif nxt >= 0 then
  redis.call('ZADD', KEYS[1], 'LT', nxt, ARGV[1])
end
return 0
";

/// KEYS: index. ARGV: grace ms, most channels. Channels marked overdue by more than
/// the grace.
const OVERDUE_LUA: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, ARGV[2])
";

/// Most messages one take hands out, and most channels one overdue check returns.
const BATCH: usize = crate::coalesce::TAKE_BATCH;

/// The coalescing scripts.
pub(super) struct Scripts {
    hold: Script,
    take: Script,
    done: Script,
    mark: Script,
    remark: Script,
    overdue: Script,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| Script::from_lua(format!("{NOW_LUA}{body}"));
        Self {
            hold: script(HOLD_LUA),
            take: script(TAKE_LUA),
            done: script(DONE_LUA),
            mark: script(MARK_LUA),
            remark: script(REMARK_LUA),
            overdue: script(OVERDUE_LUA),
        }
    }

    pub(super) async fn lead(
        &self,
        client: &Client,
        channel: &str,
        key: &str,
        window: Duration,
    ) -> Result<bool, BrokerError> {
        let set: Option<String> = client
            .set(
                keys::leading(channel, key),
                1,
                Some(Expiration::PX(window.as_millis().max(1) as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    pub(super) async fn hold(
        &self,
        client: &Client,
        node_id: &str,
        channel: &str,
        key: &str,
        message: &Message,
        window: Duration,
    ) -> Result<(Hold, Duration), BrokerError> {
        let _: i64 = self
            .mark
            .evalsha_with_reload(
                client,
                vec![keys::INDEX.to_owned()],
                vec![channel.to_owned(), millis(window)],
            )
            .await
            .map_err(unavailable)?;
        let value = format!("{} {}", message.id, wire::encode(message, node_id, None));
        let (end, now, opened, superseded): (i64, i64, i64, i64) = self
            .hold
            .evalsha_with_reload(
                client,
                vec![keys::pending(channel), keys::due(channel)],
                vec![
                    key.to_owned(),
                    value,
                    millis(window),
                    MAX_OPEN_WINDOWS.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if end < 0 {
            return Ok((Hold::Full, Duration::ZERO));
        }
        let held = Hold::Held {
            end_ms: end as u64,
            opened: opened == 1,
            superseded: superseded == 1,
        };
        Ok((
            held,
            Duration::from_millis(end.saturating_sub(now).max(0) as u64),
        ))
    }

    pub(super) async fn take(
        &self,
        client: &Client,
        channel: &str,
        all: bool,
        lease: Duration,
    ) -> Result<Taken, BrokerError> {
        let (next, values): (i64, Vec<String>) = self
            .take
            .evalsha_with_reload(
                client,
                vec![
                    keys::pending(channel),
                    keys::due(channel),
                    keys::inflight(channel),
                    keys::inflight_due(channel),
                ],
                vec![
                    if all { "1" } else { "0" }.to_owned(),
                    millis(lease),
                    BATCH.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let _: i64 = self
            .remark
            .evalsha_with_reload(
                client,
                vec![keys::INDEX.to_owned()],
                vec![channel.to_owned(), next.to_string()],
            )
            .await
            .map_err(unavailable)?;
        let messages = values
            .iter()
            .filter_map(|value| {
                let decoded = value
                    .split_once(' ')
                    .map(|(_, json)| wire::decode(json, None));
                match decoded {
                    Some(Ok((message, _))) => Some(message),
                    _ => {
                        // Only this module writes these values; log rather than loop.
                        tracing::error!(channel, "undecodable held message dropped");
                        None
                    }
                }
            })
            .collect();
        Ok(Taken {
            messages,
            next_due_ms: u64::try_from(next).ok(),
        })
    }

    pub(super) async fn done(
        &self,
        client: &Client,
        channel: &str,
        id: &str,
    ) -> Result<(), BrokerError> {
        let _: i64 = self
            .done
            .evalsha_with_reload(
                client,
                vec![keys::inflight(channel), keys::inflight_due(channel)],
                vec![id.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn overdue(
        &self,
        client: &Client,
        grace: Duration,
    ) -> Result<Vec<String>, BrokerError> {
        self.overdue
            .evalsha_with_reload(
                client,
                vec![keys::INDEX.to_owned()],
                vec![millis(grace), BATCH.to_string()],
            )
            .await
            .map_err(unavailable)
    }
}
