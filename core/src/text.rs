//! Quoting outside text in messages: at most a short prefix, so an error about a
//! megabyte-long value stays a line long.

/// Characters of an outside value an error message repeats.
pub const QUOTE_MAX_CHARS: usize = 64;

/// `text` in double quotes (Rust debug escaping), cut after [`QUOTE_MAX_CHARS`]
/// characters with the full length noted.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_short_values_kept() {
        assert_eq!(quote("1g.10gb"), "\"1g.10gb\"");
        let long = "x".repeat(1 << 20);
        let q = quote(&long);
        assert!(q.len() < QUOTE_MAX_CHARS + 32, "{q}");
        assert!(q.ends_with("(1048576 bytes)"));
        // Cut on a character boundary, never inside one.
        assert!(quote(&"é".repeat(100)).contains("... (200 bytes)"));
    }
}
