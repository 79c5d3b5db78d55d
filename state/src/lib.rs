//! claimsync-state: the journal, a sled database of what claimsync last synced per claim
//! (resource versions and content hashes each way), the last seen catalog and last known status.
//! It is a memory, never the truth: it lets a restart against in-sync clusters make zero
//! writes and keeps the last known state through a control-plane outage, but correctness never
//! depends on it; if it is lost or unusable, [`Journal::open_or_reset`] starts it empty.
#![forbid(unsafe_code)]

mod catalog;
mod claims;
mod error;
mod events;
mod hash;
mod journal;
mod keys;
mod meta;
mod records;

pub use error::JournalError;
pub use hash::content_hash;
pub use journal::{FORMAT_VERSION, Journal};
pub use records::{CatalogEntry, ClaimKey, ClaimRecord};
