//! Reading libtest's (and rustdoc's) result lines.

/// `count_before("ok. 3 passed; 0 failed", " passed") == 3`
pub fn count_before(text: &str, label: &str) -> usize {
    text.find(label)
        .and_then(|at| text[..at].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_count_before_a_label() {
        let line =
            "ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.4s";
        assert_eq!(count_before(line, " passed"), 3);
        assert_eq!(count_before(line, " ignored"), 2);
        assert_eq!(count_before(line, " skipped"), 0);
    }
}
