//! Event notes: how claimsync words the notes of the Events it publishes on local claims (its own, and those
//! mirrored from the control plane), within what the API server accepts. Pure functions.

/// An Event note the API server accepts: at most 1024 bytes, cut at a character boundary.
pub fn bounded_note(note: &str) -> String {
    if note.len() <= 1024 {
        return note.to_string();
    }
    let mut cut = 1021;
    while !note.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &note[..cut])
}

/// The note a mirrored Event carries on the local claim.
pub fn mirrored_note(remote_message: &str) -> String {
    bounded_note(&format!("[control plane] {remote_message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_marked_and_bounded() {
        assert_eq!(
            mirrored_note("Successfully composed resources"),
            "[control plane] Successfully composed resources"
        );
        let long = mirrored_note(&"é".repeat(1000));
        assert!(long.len() <= 1024 && long.ends_with("..."));
    }
}
