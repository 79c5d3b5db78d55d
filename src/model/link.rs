//! The link to the control plane as claimsync sees it: up, or down since a moment and why. Lost is declared only
//! after probes have failed for a while, and restored only after probes succeed twice in a row, so that a flapping
//! link neither flips every claim's condition nor resyncs everything on each blip. Pure state machine over probe
//! results and a clock in milliseconds.

/// Why the control plane cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// No answer: connection refused or reset, a timeout, TLS failure.
    Unreachable,
    /// It answered 401: the credentials claimsync holds were rejected.
    CredentialsRejected,
}

/// The state claimsync acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down { why: Down, reason: String },
}

impl LinkState {
    pub fn is_up(&self) -> bool {
        *self == LinkState::Up
    }
}

/// A probe's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Ok,
    Failed { why: Down, reason: String },
}

/// How long probes must keep failing before the link is declared lost.
pub const LOST_AFTER_MS: u64 = 10_000;
/// How many successful probes in a row restore a lost link.
pub const RESTORED_AFTER: u32 = 2;

/// The hysteresis between probe results and the declared state.
#[derive(Debug)]
pub struct Hysteresis {
    state: LinkState,
    failing_since_ms: Option<u64>,
    successes: u32,
}

impl Hysteresis {
    /// Starts in `state`: `Up`, or `Down` when the first probe at start failed (a start during an outage is
    /// offline at once; there is nothing to keep showing).
    pub fn new(state: LinkState) -> Self {
        Hysteresis {
            state,
            failing_since_ms: None,
            successes: 0,
        }
    }

    pub fn state(&self) -> &LinkState {
        &self.state
    }

    /// Takes one probe result at `now_ms`; returns the new state when it changed.
    pub fn observe(&mut self, now_ms: u64, probe: Probe) -> Option<LinkState> {
        match probe {
            Probe::Ok => {
                self.failing_since_ms = None;
                self.successes += 1;
                if !self.state.is_up() && self.successes >= RESTORED_AFTER {
                    self.state = LinkState::Up;
                    return Some(LinkState::Up);
                }
                None
            }
            Probe::Failed { why, reason } => {
                self.successes = 0;
                let since = *self.failing_since_ms.get_or_insert(now_ms);
                let down = LinkState::Down { why, reason };
                match &self.state {
                    LinkState::Up if now_ms.saturating_sub(since) >= LOST_AFTER_MS => {
                        self.state = down.clone();
                        Some(down)
                    }
                    // Already down: a change of reason (e.g. refused, then credentials rejected) is a change.
                    LinkState::Down { why: was, .. } if *was != why => {
                        self.state = down.clone();
                        Some(down)
                    }
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Probe {
        Probe::Failed {
            why: Down::Unreachable,
            reason: "refused".into(),
        }
    }

    fn down(why: Down, reason: &str) -> Option<LinkState> {
        Some(LinkState::Down {
            why,
            reason: reason.into(),
        })
    }

    #[test]
    fn lost_only_after_failing_for_a_while_and_restored_after_two_successes() {
        let mut link = Hysteresis::new(LinkState::Up);
        // (time ms, probe, transition expected)
        let steps: Vec<(u64, Probe, Option<LinkState>)> = vec![
            (0, failed(), None),
            (3_000, failed(), None),
            (6_000, Probe::Ok, None), // a blip: the count starts over
            (9_000, failed(), None),
            (15_000, failed(), None),
            (19_000, failed(), down(Down::Unreachable, "refused")),
            (22_000, failed(), None),
            (
                25_000,
                Probe::Failed {
                    why: Down::CredentialsRejected,
                    reason: "401".into(),
                },
                down(Down::CredentialsRejected, "401"),
            ),
            (28_000, Probe::Ok, None),
            // Down, for another reason now: said.
            (31_000, failed(), down(Down::Unreachable, "refused")),
            (34_000, Probe::Ok, None),
            (37_000, Probe::Ok, Some(LinkState::Up)),
            (40_000, Probe::Ok, None),
        ];
        for (at, probe, want) in steps {
            assert_eq!(link.observe(at, probe), want, "at {at} ms");
        }
        assert!(link.state().is_up());
    }

    #[test]
    fn a_link_flapping_faster_than_the_lost_time_is_never_lost() {
        let mut link = Hysteresis::new(LinkState::Up);
        for cycle in 0..20u64 {
            let at = cycle * 6_000;
            assert_eq!(link.observe(at, failed()), None);
            assert_eq!(link.observe(at + 3_000, Probe::Ok), None);
        }
    }

    #[test]
    fn a_start_offline_is_down_at_once() {
        let mut link = Hysteresis::new(LinkState::Down {
            why: Down::Unreachable,
            reason: "refused".into(),
        });
        assert_eq!(link.observe(0, failed()), None);
        assert_eq!(link.observe(1_000, Probe::Ok), None);
        assert_eq!(link.observe(2_000, Probe::Ok), Some(LinkState::Up));
    }
}
