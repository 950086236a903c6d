//! Identifiers. Every id is a ULID, so ids sort by creation time. Ids of things a wake
//! produces (child envelopes, timeline events) are *derived* from the id of the envelope
//! that caused the wake, so a wake that runs twice produces the same ids twice and the
//! receiver's dedupe makes the second copy harmless.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Ulid);

        impl $name {
            /// A fresh id stamped with `now_ms`.
            pub fn new(now_ms: u64) -> Self {
                Self(Ulid::from_parts(now_ms, rand_bits()))
            }
            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": "A ULID: 26 characters of Crockford base32.",
                    "pattern": "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$",
                    "minLength": 26,
                    "maxLength": 26
                })
            }
        }
        impl FromStr for $name {
            type Err = ulid::DecodeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ulid::from_string(s).map(Self)
            }
        }
    };
}

ulid_id!(
    /// Identity of an envelope; also its queue deduplication id.
    EnvelopeId
);
ulid_id!(
    /// Identity of a task, the unit a user submits and watches.
    TaskId
);
ulid_id!(
    /// Identity of a timeline event.
    EventId
);

impl EnvelopeId {
    /// The id of the `index`-th thing of type `tag` produced by the wake of this envelope.
    /// Keeps the parent's timestamp, so derived ids still sort near their cause.
    pub fn derive(&self, tag: &str, index: u32) -> Ulid {
        let mut h = Sha256::new();
        h.update(self.0.to_bytes());
        h.update(tag.as_bytes());
        h.update(index.to_be_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let random = u128::from_be_bytes(bytes) & ((1u128 << 80) - 1);
        Ulid::from_parts(self.0.timestamp_ms(), random)
    }

    /// The id of the `index`-th envelope produced by the wake of this one.
    pub fn child(&self, index: u32) -> EnvelopeId {
        EnvelopeId(self.derive("envelope", index))
    }

    /// The id of the `index`-th timeline event produced by the wake of this one. The
    /// low 16 bits hold the index, so one wake's events sort in the order written.
    pub fn event(&self, index: u32) -> EventId {
        self.event_slot(index.saturating_add(1).min(0xFFFF))
    }

    /// The event that records this envelope's creation (a task's `submitted`); it
    /// sorts before every event of the envelope's own wake.
    pub fn origin_event(&self) -> EventId {
        self.event_slot(0)
    }

    fn event_slot(&self, slot: u32) -> EventId {
        let base = self.derive("event", 0);
        let random = (base.random() & !0xFFFF) | u128::from(slot);
        EventId(Ulid::from_parts(base.timestamp_ms(), random))
    }
}

fn rand_bits() -> u128 {
    // Ulid::new() draws from a thread-local RNG; keep only its random part.
    Ulid::new().random()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_deterministic_distinct_and_keep_time() {
        let parent = EnvelopeId::new(1_700_000_000_000);
        assert_eq!(parent.child(0), parent.child(0));
        assert_ne!(parent.child(0), parent.child(1));
        assert_ne!(parent.child(0).0, parent.event(0).0);
        assert_eq!(parent.child(3).timestamp_ms(), 1_700_000_000_000);
        assert!(parent.origin_event() < parent.event(0) && parent.event(2) < parent.event(300));
        let other = EnvelopeId::new(1_700_000_000_000);
        assert_ne!(parent.child(0), other.child(0));
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = TaskId::new(42);
        let back: TaskId = id.to_string().parse().unwrap();
        assert_eq!(id, back);
        assert!("not-a-ulid".parse::<TaskId>().is_err());
    }
}
