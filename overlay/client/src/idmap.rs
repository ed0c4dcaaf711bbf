//! Hash maps keyed by sequential ids (request and tunnel ids), with the protocol crate's fixed
//! [`IdHasher`]: much cheaper than SipHash, and no per-process seed. Ids are chosen by this
//! library or the node, never by a remote attacker who could aim at collisions, and a collision
//! only costs probing.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use petal_protocol::id::IdHasher;

/// A map from ids to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
