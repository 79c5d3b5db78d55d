//! Marks of remote events already mirrored into the app cluster, keyed by remote
//! event UID with the highest count mirrored, so restarts do not duplicate events.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::JournalError;
use crate::journal::{EVENTS, Journal, decode, encode, storage};
use crate::records::EventMark;

impl Journal {
    /// Whether event `remote_event_uid` was already mirrored with `count` or higher.
    pub fn event_mirrored(&self, remote_event_uid: &str, count: u64) -> Result<bool, JournalError> {
        let uid = remote_event_uid;
        let Some(raw) = self
            .events
            .get(uid.as_bytes())
            .map_err(storage(|| format!("reading event mark {uid}")))?
        else {
            return Ok(false);
        };
        let mark: EventMark = decode(EVENTS, &uid, &raw)?;
        Ok(mark.count >= count)
    }

    /// Records that event `remote_event_uid` was mirrored with `count`, stamped now.
    ///
    /// Never lowers a recorded count; an undecodable mark is overwritten.
    pub fn record_event_mirrored(&self, remote_event_uid: &str, count: u64) -> Result<(), JournalError> {
        self.record_event_mirrored_at(remote_event_uid, count, now_unix())
    }

    /// Forgets event marks recorded before `unix_seconds`; returns how many.
    ///
    /// Undecodable marks are forgotten too.
    pub fn forget_events_before(&self, unix_seconds: u64) -> Result<usize, JournalError> {
        let mut forgotten = 0;
        for entry in self.events.iter() {
            let (uid, raw) = entry.map_err(storage(|| "listing event marks".to_string()))?;
            let expired = match serde_json::from_slice::<EventMark>(&raw) {
                Ok(mark) => mark.recorded_unix < unix_seconds,
                Err(_) => true,
            };
            if !expired {
                continue;
            }
            let swapped = self
                .events
                .compare_and_swap(&uid, Some(&raw), None::<&[u8]>)
                .map_err(storage(|| {
                    format!("forgetting event mark {}", String::from_utf8_lossy(&uid))
                }))?;
            // A concurrent re-record wins: that mark is fresh again.
            if swapped.is_ok() {
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// [`Journal::record_event_mirrored`] with an explicit clock.
    pub(crate) fn record_event_mirrored_at(&self, uid: &str, count: u64, now: u64) -> Result<(), JournalError> {
        loop {
            let old = self
                .events
                .get(uid.as_bytes())
                .map_err(storage(|| format!("reading event mark {uid}")))?;
            let previous = old
                .as_ref()
                .and_then(|raw| serde_json::from_slice::<EventMark>(raw).ok());
            let mark = match previous {
                Some(prev) => EventMark {
                    count: prev.count.max(count),
                    recorded_unix: prev.recorded_unix.max(now),
                },
                None => EventMark {
                    count,
                    recorded_unix: now,
                },
            };
            if previous == Some(mark) {
                return Ok(());
            }
            let new = encode(EVENTS, &uid, &mark)?;
            let swapped = self
                .events
                .compare_and_swap(uid.as_bytes(), old, Some(new))
                .map_err(storage(|| format!("writing event mark {uid}")))?;
            if swapped.is_ok() {
                return Ok(());
            }
        }
    }

    /// Decodes every event mark, returning the first corruption found.
    pub(crate) fn validate_events(&self) -> Result<(), JournalError> {
        for entry in self.events.iter() {
            let (uid, raw) = entry.map_err(storage(|| "listing event marks".to_string()))?;
            decode::<EventMark>(EVENTS, &String::from_utf8_lossy(&uid), &raw)?;
        }
        Ok(())
    }
}

/// Current Unix time in seconds (0 if the clock is before 1970).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_by_count() {
        let journal = Journal::temporary().expect("journal");
        assert!(!journal.event_mirrored("e", 1).expect("absent"));
        journal.record_event_mirrored("e", 3).expect("record");
        // (count queried, already mirrored?)
        let cases = [(0, true), (1, true), (3, true), (4, false), (100, false)];
        for (count, mirrored) in cases {
            assert_eq!(
                journal.event_mirrored("e", count).expect("query"),
                mirrored,
                "count {count}"
            );
        }
        assert!(!journal.event_mirrored("other", 1).expect("other uid"));

        journal.record_event_mirrored("e", 2).expect("lower count");
        assert!(
            journal.event_mirrored("e", 3).expect("still 3"),
            "a lower count never lowers the mark"
        );
        journal.record_event_mirrored("e", 5).expect("higher count");
        assert!(journal.event_mirrored("e", 5).expect("now 5"));
        assert!(!journal.event_mirrored("e", 6).expect("not 6"));
    }

    #[test]
    fn forget_events_before_collects_old_marks() {
        let journal = Journal::temporary().expect("journal");
        journal.record_event_mirrored_at("old", 1, 100).expect("old");
        journal.record_event_mirrored_at("edge", 1, 200).expect("edge");
        journal.record_event_mirrored_at("new", 1, 300).expect("new");
        journal
            .record_event_mirrored_at("refreshed", 1, 100)
            .expect("refreshed");
        journal.record_event_mirrored_at("refreshed", 1, 250).expect("refresh");
        journal.record_event_mirrored_at("never-older", 1, 300).expect("late");
        journal
            .record_event_mirrored_at("never-older", 2, 50)
            .expect("clock skew");
        journal.events.insert("garbage", &b"nope"[..]).expect("garbage");

        assert_eq!(journal.forget_events_before(0).expect("gc none"), 1, "only the garbage");
        assert_eq!(journal.forget_events_before(200).expect("gc"), 1);
        let cases = [
            ("old", false),
            ("edge", true),
            ("new", true),
            ("refreshed", true),
            ("never-older", true),
        ];
        for (uid, kept) in cases {
            assert_eq!(journal.event_mirrored(uid, 1).expect("query"), kept, "{uid}");
        }
        assert!(journal.event_mirrored("never-older", 2).expect("count kept"));
        assert_eq!(journal.forget_events_before(301).expect("gc all"), 4);
        assert_eq!(journal.forget_events_before(u64::MAX).expect("gc empty"), 0);
    }

    #[test]
    fn record_uses_the_wall_clock() {
        let journal = Journal::temporary().expect("journal");
        let before = now_unix();
        journal.record_event_mirrored("e", 1).expect("record");
        assert_eq!(journal.forget_events_before(before).expect("recent kept"), 0);
        assert_eq!(journal.forget_events_before(now_unix() + 1).expect("all old"), 1);
    }

    #[test]
    fn corrupt_mark_is_reported_then_healed() {
        let journal = Journal::temporary().expect("journal");
        journal.events.insert("e", &b"{"[..]).expect("garbage");
        assert!(matches!(
            journal.event_mirrored("e", 1),
            Err(JournalError::Corrupt { tree: EVENTS, .. })
        ));
        journal.record_event_mirrored("e", 2).expect("overwrite");
        assert!(journal.event_mirrored("e", 2).expect("healed"));
    }
}
