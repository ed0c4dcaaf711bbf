//! The leases of the identities a node holds: its line in each identity's registry, renewed
//! every third of `identity_lease` by compare-and-set (read, then write on the version read; a
//! conflict reads again) and removed the same way when the node's last holder lets go.

use std::time::Duration;

use petal_protocol::{StoreOpKind, StoreResult, Version};

use super::Owner;
use super::identity::{IdResult, Line, encode_lines, parse_lines, registry_key};
use crate::node::{Node, TimerKey};
use crate::time::Time;

impl Node {
    /// Starts a step of `identity`'s lease (a registry read) unless one is under way.
    pub(super) fn lease_kick(&mut self, now: Time, identity: &str) {
        let t = self.registry_timeout_ms();
        let Some(lease) = self.ids().leases.get_mut(identity) else {
            return;
        };
        if lease.busy {
            return;
        }
        lease.busy = true;
        lease.writing = false;
        lease.renew_at = Time::MAX;
        let read = self.nonce();
        let name = registry_key(identity);
        self.issue_op(
            now,
            read,
            Owner::Lease(identity.into()),
            &name,
            StoreOpKind::Get,
            t,
        );
    }

    /// A step of `identity`'s lease answered: after a read, write the registry with this
    /// node's line renewed (or removed) on the version read; after a write, done until the
    /// next renewal (or read again after a conflict).
    pub(super) fn on_lease_result(&mut self, now: Time, identity: &str, result: StoreResult) {
        let wall = self.wall_ms(now);
        let (lease_ms, t) = (self.lease_ms(), self.registry_timeout_ms());
        let me = self.me;
        if let StoreResult::Failed(why) = &result
            && self.external_registry()
        {
            self.note_lease_error(identity, why);
        }
        let Some(lease) = self.ids().leases.get_mut(identity) else {
            return;
        };
        lease.busy = false;
        if !lease.writing {
            let (version, lines) = match &result {
                StoreResult::Found { version, value, .. } => (*version, parse_lines(value)),
                StoreResult::NotFound => (Version::NONE, Vec::new()),
                _ => {
                    self.lease_retry(now, identity);
                    return;
                }
            };
            let mut lines: Vec<Line> = lines
                .into_iter()
                .filter(|l| l.expires_ms > wall && l.node.id != me.id)
                .collect();
            let remove = lease.remove;
            if !remove {
                lines.push(Line {
                    node: me,
                    expires_ms: wall.saturating_add(lease_ms),
                });
            }
            let kind = if lines.is_empty() {
                if version == Version::NONE {
                    // Nothing to remove: the registry does not list this node.
                    self.lease_settled(now, identity, false);
                    return;
                }
                StoreOpKind::Delete {
                    expect: Some(version),
                }
            } else {
                let last = lines.iter().map(|l| l.expires_ms).max().unwrap_or(wall);
                StoreOpKind::Put {
                    value: encode_lines(&lines),
                    ttl_ms: last.saturating_sub(wall).max(1),
                    expect: Some(version),
                }
            };
            lease.busy = true;
            lease.writing = true;
            lease.write_lists = !remove;
            let write = self.nonce();
            let name = registry_key(identity);
            self.issue_op(now, write, Owner::Lease(identity.into()), &name, kind, t);
            return;
        }
        match result {
            StoreResult::Written(_) => {
                // What the write did (list or unlist this node), not what is wanted now.
                let listed = lease.write_lists;
                self.lease_settled(now, identity, listed);
            }
            StoreResult::Conflict(_) => {
                lease.conflicts += 1;
                if lease.conflicts > 8 {
                    self.lease_retry(now, identity);
                } else {
                    self.lease_kick(now, identity);
                }
            }
            _ => self.lease_retry(now, identity),
        }
    }

    /// A lease step failed: try again in a second.
    fn lease_retry(&mut self, now: Time, identity: &str) {
        let at = now + Duration::from_secs(1);
        if let Some(lease) = self.ids().leases.get_mut(identity) {
            lease.renew_at = at;
            self.arm_lease_timer(now, at);
        }
    }

    /// The registry now lists this node for `identity` (`listed`) or not.
    fn lease_settled(&mut self, now: Time, identity: &str, listed: bool) {
        let renew = now + self.cfg.identity_lease / 3;
        let still_held = self.ids().held.contains_key(identity);
        let Some(lease) = self.ids().leases.get_mut(identity) else {
            return;
        };
        lease.conflicts = 0;
        lease.listed = listed;
        lease.remove = !still_held;
        if !still_held && !listed {
            // Let go and no longer listed: the lease ends.
            self.ids().leases.remove(identity);
            return;
        }
        if still_held != listed {
            // Held again during a removal, or let go during a renewal: one more step.
            self.lease_kick(now, identity);
            return;
        }
        let waiting = std::mem::take(&mut lease.waiting);
        lease.renew_at = renew;
        for id in waiting {
            self.id_done(id, IdResult::Registered);
        }
        self.arm_lease_timer(now, renew);
    }

    /// Arms the lease timer at `at` unless it is armed earlier (and still ahead).
    fn arm_lease_timer(&mut self, now: Time, at: Time) {
        let ids = self.ids();
        if ids.lease_timer_at <= now || at < ids.lease_timer_at {
            ids.lease_timer_at = at;
            self.set_timer(at, TimerKey::IdLease);
        }
    }

    /// Renews the leases that are due.
    pub(crate) fn on_id_lease(&mut self, now: Time) {
        self.ids().lease_timer_at = Time::MAX;
        let due: Vec<String> = self
            .store
            .as_ref()
            .map(|s| {
                s.ids
                    .leases
                    .iter()
                    .filter(|(_, l)| !l.busy && l.renew_at <= now)
                    .map(|(k, _)| k.to_string())
                    .collect()
            })
            .unwrap_or_default();
        for identity in due {
            self.lease_kick(now, &identity);
        }
        if let Some(next) = self.next_lease_time() {
            self.arm_lease_timer(now, next.max(now));
        }
    }

    pub(super) fn next_lease_time(&self) -> Option<Time> {
        self.store
            .as_ref()?
            .ids
            .leases
            .values()
            .filter(|l| !l.busy)
            .map(|l| l.renew_at)
            .min()
    }
}
