//! `herald-operator`: reconciles PushCluster and Channel resources.

fn main() {}
