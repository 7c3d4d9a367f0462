//! Herald's end-to-end stories: each file in `tests/` tells one story against real processes.
//!
//! This library is empty on purpose; the stories use `herald-testkit` (the fixtures) and
//! `herald-bench` (its WebSocket clients and peers) as dev-dependencies.
