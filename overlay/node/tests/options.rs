//! `Options::new`'s defaults that a restart depends on.

use petal_node::secure::Identity;
use petal_node::{LinkSecurity, Options};

/// A node restarted with the same identity (a key file) gets another core seed, so its
/// request, tunnel and probe ids do not start where its past life's did (a late reply to the
/// old incarnation must not match a new request), and its round-trip cache's key is not
/// derived from its public id.
#[test]
fn a_restart_with_the_same_identity_draws_another_core_seed() {
    let id = Identity::from_seed(7);
    let a = Options::new(id.clone(), LinkSecurity::Plaintext);
    let b = Options::new(id.clone(), LinkSecurity::Plaintext);
    assert_ne!(a.seed, b.seed);
    let n = id.node_id().0;
    let (lo, hi) = (n as u64, (n >> 64) as u64);
    assert_ne!(a.seed, lo ^ hi, "not the id's fold (petald's old seed)");
    assert_ne!(a.seed, lo, "not the id's low bits (the old default)");
}
