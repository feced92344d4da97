//! The one error type of the numerical core. The binding layer maps it to Python exceptions
//! (`InvalidInput` -> `ValueError`, `NoConvergence` -> `disco.ConvergenceError`).

use std::fmt;

/// Everything a kernel can refuse or fail at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The caller passed something the kernel cannot give a correct answer for.
    #[error("{0}")]
    InvalidInput(Message),
    /// An iterative solver stopped without meeting its tolerance; `last` is its final iterate.
    #[error("{message}")]
    NoConvergence {
        message: String,
        last: Vec<f64>,
        iterations: usize,
        max_error: f64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A one-line user message whose references to an argument's entries are fields, not text:
/// the binding layer can name them (a feature's name for its index) without parsing the text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message(Vec<Part>);

/// One piece of a [`Message`].
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// Entry `index` of argument `arg`, shown as `arg[index]`.
    Entry { arg: String, index: usize },
    /// Feature `index` (column `index` of the `features` argument), shown as `feature index`.
    Feature(usize),
}

/// The argument a [`Part::Feature`] indexes, as [`Message::render`] passes it to its namer.
pub const FEATURES_ARG: &str = "features";

impl Message {
    /// A message of plain text.
    pub fn text(text: impl Into<String>) -> Self {
        Self(vec![Part::Text(text.into())])
    }

    /// Appends plain text.
    #[must_use]
    pub fn then(mut self, text: impl Into<String>) -> Self {
        self.0.push(Part::Text(text.into()));
        self
    }

    /// Appends `arg[index]`.
    #[must_use]
    pub fn entry(mut self, arg: &str, index: usize) -> Self {
        self.0.push(Part::Entry {
            arg: arg.to_string(),
            index,
        });
        self
    }

    /// Appends `feature index`.
    #[must_use]
    pub fn feature(mut self, index: usize) -> Self {
        self.0.push(Part::Feature(index));
        self
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.0
    }

    /// The message as text, each entry followed by ` ('label')` where `label(arg, index)`
    /// gives one (a feature is entry `index` of [`FEATURES_ARG`]).
    pub fn render(&self, label: &dyn Fn(&str, usize) -> Option<String>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            let (shown, arg, index) = match part {
                Part::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Entry { arg, index } => (format!("{arg}[{index}]"), arg.as_str(), *index),
                Part::Feature(index) => (format!("feature {index}"), FEATURES_ARG, *index),
            };
            out.push_str(&shown);
            if let Some(label) = label(arg, index) {
                out.push_str(" (");
                out.push_str(&label);
                out.push(')');
            }
        }
        out
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|_, _| None))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

/// Shorthand for an `InvalidInput` error.
pub(crate) fn invalid(message: impl Into<Message>) -> Error {
    Error::InvalidInput(message.into())
}

/// Checks that every value is a legal log-score: finite or `-inf` (probability zero).
/// NaN and `+inf` are refused with the argument name and the first offending position.
pub fn check_log_scores(arg: &str, values: &[f64]) -> Result<()> {
    // `!(v < INF)` is true exactly for NaN and +inf.
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !(**v < f64::INFINITY))
    {
        return Err(invalid(Message::default().entry(arg, i).then(format!(
            " is {}: log-scores must be finite or -inf",
            describe(*v)
        ))));
    }
    Ok(())
}

/// Checks that every value is finite (features, moments, coefficients).
pub fn check_finite(arg: &str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(invalid(
            Message::default()
                .entry(arg, i)
                .then(format!(" is {}: values must be finite", describe(*v))),
        ));
    }
    Ok(())
}

/// Checks that a row-major matrix of `rows` x `cols` values has a finite entry everywhere.
pub fn check_finite_matrix(arg: &str, values: &[f64], cols: usize) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let (r, c) = (
            i.checked_div(cols).unwrap_or(i),
            i.checked_rem(cols).unwrap_or(0),
        );
        return Err(invalid(format!(
            "{arg}[{r}, {c}] is {}: values must be finite",
            describe(*v)
        )));
    }
    Ok(())
}

/// Checks that several per-sample arrays have the same length as the first.
pub fn check_same_length(arrays: &[(&str, usize)]) -> Result<()> {
    if let Some(((first, n), rest)) = arrays.split_first() {
        for (name, m) in rest {
            if m != n {
                return Err(invalid(format!(
                    "length mismatch: {first} has {n} values but {name} has {m}"
                )));
            }
        }
    }
    Ok(())
}

/// Checks that an array is not empty.
pub fn check_non_empty(arg: &str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(invalid(format!(
            "{arg} is empty: at least one sample is needed"
        )));
    }
    Ok(())
}

fn describe(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+inf"
    } else {
        "-inf"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_entries_only_where_the_caller_labels_them() {
        let m = Message::default()
            .entry("target_moments", 1)
            .then(" = 7 is outside the range that ")
            .feature(1)
            .then(" takes");
        assert_eq!(
            m.to_string(),
            "target_moments[1] = 7 is outside the range that feature 1 takes"
        );
        let named = m.render(&|arg, k| (k == 1).then(|| format!("'{arg}'")));
        assert_eq!(
            named,
            "target_moments[1] ('target_moments') = 7 is outside the range that feature 1 \
             ('features') takes"
        );
        let err = check_log_scores("x", &[0.0, f64::NAN]).unwrap_err();
        let Error::InvalidInput(m) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            m.parts()[0],
            Part::Entry {
                arg: "x".into(),
                index: 1
            }
        );
    }
}
