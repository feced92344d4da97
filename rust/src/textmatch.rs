//! Regular-expression features in linear time: Rust's `regex` crate compiles a pattern to a
//! finite automaton, so a search costs O(pattern × text) whatever the pattern (Python's `re`
//! backtracks, and `^(\w+\s?)*$` on one sentence can run for ever).
//!
//! The price is the syntax the automaton cannot express: backreferences and look-around are
//! refused when the pattern is compiled, with the crate's reason.

use rayon::prelude::*;
use regex::{Regex, RegexBuilder};

use crate::error::{invalid, Result};

/// Batches of at least this many texts are searched in parallel (results are per text, so the
/// split cannot change them).
const PARALLEL_TEXTS: usize = 256;
/// Largest compiled program accepted (the crate's default is 10 MiB; features are short).
const SIZE_LIMIT: usize = 10 << 20;

/// A compiled pattern with the flags of Python's `re` that have an equivalent.
#[derive(Debug, Clone)]
pub struct TextPattern {
    regex: Regex,
}

impl TextPattern {
    /// Compiles `pattern` with `flags`, a string of `i` (ignore case), `m` (`^`/`$` at line
    /// breaks) and `s` (`.` matches a newline too).
    pub fn compile(pattern: &str, flags: &str) -> Result<Self> {
        let mut builder = RegexBuilder::new(pattern);
        builder.size_limit(SIZE_LIMIT);
        for flag in flags.chars() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.multi_line(true),
                's' => builder.dot_matches_new_line(true),
                other => {
                    return Err(invalid(format!(
                        "unknown regex flag {other:?}: use 'i', 'm' or 's'"
                    )))
                }
            };
        }
        let regex = builder.build().map_err(|e| {
            invalid(format!(
                "invalid regular expression {pattern:?}: {}; regex features run in \
                 linear time (Rust's regex crate), which rules out backreferences and \
                 look-around",
                one_line(&e)
            ))
        })?;
        Ok(TextPattern { regex })
    }

    /// Whether the pattern matches anywhere in each text (Python's `re.search(...) is not None`).
    pub fn search<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<bool> {
        if texts.len() < PARALLEL_TEXTS {
            texts
                .iter()
                .map(|t| self.regex.is_match(t.as_ref()))
                .collect()
        } else {
            texts
                .par_iter()
                .map(|t| self.regex.is_match(t.as_ref()))
                .collect()
        }
    }
}

/// The crate's message without its multi-line drawing of the pattern.
fn one_line(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            ToString::to_string,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_like_python_re() {
        let p = TextPattern::compile(r"\bgod\b", "i").unwrap();
        assert_eq!(
            p.search(&["In the beginning God", "godly", "GOD."]),
            vec![true, false, true]
        );
        let lines = TextPattern::compile(r"^b$", "m").unwrap();
        assert_eq!(lines.search(&["a\nb\nc", "ab"]), vec![true, false]);
        let dot = TextPattern::compile(r"a.b", "s").unwrap();
        assert_eq!(dot.search(&["a\nb"]), vec![true]);
        assert_eq!(
            TextPattern::compile(r"a.b", "").unwrap().search(&["a\nb"]),
            vec![false]
        );
    }

    #[test]
    fn catastrophic_pattern_is_linear() {
        // Exponential for a backtracking engine; here one pass over the text.
        let p = TextPattern::compile(r"^(\w+\s?)*$", "").unwrap();
        let text = "an ordinary sentence of a few words that does not end with a word!".repeat(50);
        assert_eq!(p.search(&[text.as_str()]), vec![false]);
    }

    #[test]
    fn refuses_what_the_automaton_cannot_do() {
        for pattern in [r"(a)\1", r"foo(?=bar)", r"(?<!x)y", "("] {
            let err = TextPattern::compile(pattern, "").unwrap_err().to_string();
            assert!(
                err.contains("invalid regular expression") && !err.contains('\n'),
                "{err}"
            );
        }
        assert!(TextPattern::compile("a", "x").is_err());
    }
}
